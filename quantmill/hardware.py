"""What machine a number was measured on."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from quantmill.errors import QuantmillError

# The ONNX Runtime execution provider that benchmarks on each hardware target.
PROVIDERS = {"cpu": "CPUExecutionProvider", "gpu": "CUDAExecutionProvider"}


class HardwareUnavailable(QuantmillError):
    """This worker cannot benchmark on the target asked for; the message says why."""


@dataclass(frozen=True)
class Hardware:
    """The CPU and runtime every benchmark figure is stated against."""

    target: str
    cpu: str
    cores: int
    isa: tuple[str, ...]
    runtime: str
    accelerator: str | None = None

    def describe(self) -> str:
        """Return one line, e.g. 'cpu: AMD EPYC, 2 cores, avx2 (no avx512_vnni), onnxruntime 1.32.0 CPUExecutionProvider'."""
        vnni = "" if self.has_vnni() else " (no avx512_vnni/avx_vnni)"
        host = f"{self.cpu}, {self.cores} cores, {' '.join(self.isa) or 'baseline ISA'}{vnni}"
        device = f"{self.accelerator} on host {host}" if self.accelerator else host
        return f"{self.target}: {device}, {self.runtime}"

    def has_vnni(self) -> bool:
        """Return whether the CPU has an 8-bit dot-product instruction (VNNI)."""
        return any("vnni" in flag for flag in self.isa)


_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "sve")


def local_cpu(runtime: str | None = None) -> Hardware:
    """Return the Hardware of this machine's CPU with the runtime that benchmarks on it
    (default: ONNX Runtime's CPU provider)."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            if key.strip() in ("flags", "Features"):
                flags = set(value.split())
                break
    return Hardware(
        target="cpu", cpu=model, cores=os.cpu_count() or 1,
        isa=tuple(flag for flag in _ISA if flag in flags),
        runtime=runtime or f"onnxruntime {ort.__version__} CPUExecutionProvider",
    )


def local_hardware(target: str) -> Hardware:
    """Return this machine's Hardware for target ("cpu" or "gpu") with ONNX Runtime's
    provider for it.

    Raises HardwareUnavailable when this ONNX Runtime build lacks the target's provider
    (e.g. a CPU-only build asked for "gpu") or the target is unknown.
    """
    if target not in PROVIDERS:
        raise HardwareUnavailable(f"unknown hardware target {target!r}; known: {', '.join(PROVIDERS)}")
    provider = PROVIDERS[target]
    if provider not in ort.get_available_providers():
        raise HardwareUnavailable(
            f"onnxruntime {ort.__version__} on this worker has no {provider} "
            f"(available: {', '.join(ort.get_available_providers())})"
        )
    host = local_cpu(f"onnxruntime {ort.__version__} {provider}")
    if target == "cpu":
        return host
    return Hardware(target, host.cpu, host.cores, host.isa, host.runtime, accelerator=_gpu_name())


def _gpu_name() -> str:
    import subprocess

    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return "NVIDIA GPU (nvidia-smi unavailable)"
    return ", ".join(line.strip() for line in done.stdout.splitlines() if line.strip())
