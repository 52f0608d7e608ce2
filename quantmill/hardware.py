"""What machine a number was measured on."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, replace
from pathlib import Path

from quantmill.errors import QuantmillError
from quantmill.targets import HOST, Target


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

    def identity(self) -> str:
        """Return what a measurement on this machine is stated against, and what a table row
        must match to count as measured here: the accelerator (where there is one), the CPU's
        model and the features that change which kernels run, e.g. 'Intel Xeon | avx2
        avx512_vnni amx_int8' or 'NVIDIA H200 | AMD EPYC | avx2'."""
        cpu = f"{self.cpu} | {' '.join(f for f in KERNEL_FEATURES if f in self.isa) or 'baseline ISA'}"
        return f"{self.accelerator} | {cpu}" if self.accelerator else cpu

    def has_vnni(self) -> bool:
        """Return whether the CPU has an 8-bit dot-product instruction (VNNI)."""
        return any("vnni" in flag for flag in self.isa)


_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "sve")
# The CPU features that decide which kernels ONNX Runtime and llama.cpp run (AVX2, AVX-512
# VNNI, AMX; dot-product and SVE on Arm), and so whether a speed measured elsewhere holds here.
KERNEL_FEATURES = ("avx2", "avx512_vnni", "amx_int8", "asimddp", "sve")


def same_machine(identity: str, other: str) -> bool:
    """Return whether two identities (Hardware.identity) name the same kind of machine: the
    same accelerator, the same CPU maker and the same kernel features. CPU model strings
    differ in detail between clouds (an 'AMD EPYC' and an 'AMD EPYC 9R14' run the same
    kernels), so only their maker counts."""
    def key(text: str) -> tuple:
        parts = [p.strip() for p in text.split("|")]
        accelerator = parts[:-2]
        maker = re.sub(r"\((r|tm)\)", "", parts[-2].split()[0].lower()) if len(parts) >= 2 and parts[-2] else ""
        return tuple(accelerator), maker, frozenset(parts[-1].split())

    return key(identity) == key(other)


def local_cpu(runtime: str) -> Hardware:
    """Return the Hardware of this machine's CPU with the runtime(s) that benchmark on it."""
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
        target=HOST.name, cpu=model, cores=os.cpu_count() or 1,
        isa=tuple(flag for flag in _ISA if flag in flags),
        runtime=runtime,
    )


def local_hardware(target: Target, runtime: str) -> Hardware:
    """Return this machine's Hardware for target, stating runtime (the runtimes that measure
    on it). Raises HardwareUnavailable when the target's probe says this worker lacks it."""
    reason = target.unavailable()
    if reason is not None:
        raise HardwareUnavailable(reason)
    return replace(local_cpu(runtime), target=target.name, accelerator=target.accelerator())
