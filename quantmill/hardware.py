"""What machine a number was measured on."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort


@dataclass(frozen=True)
class Hardware:
    """The CPU and runtime every benchmark figure is stated against."""

    target: str
    cpu: str
    cores: int
    isa: tuple[str, ...]
    runtime: str

    def describe(self) -> str:
        """Return one line, e.g. 'cpu: AMD EPYC, 2 cores, avx2 (no avx512_vnni), onnxruntime 1.32.0 CPUExecutionProvider'."""
        vnni = "" if self.has_vnni() else " (no avx512_vnni/avx_vnni)"
        return f"{self.target}: {self.cpu}, {self.cores} cores, {' '.join(self.isa) or 'baseline ISA'}{vnni}, {self.runtime}"

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
