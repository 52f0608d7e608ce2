"""The one list of hardware targets: each a name, a probe that tells a worker whether it
can run the target (and why not), the Prefect work pool whose workers run it, and the
runtimes it offers. Formats run on a target when their runtime is among its runtimes.

Adding a target is one entry here, one work pool in deployments/prefect.yaml and one
benchmark script in benchmarks/.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from quantmill.errors import QuantmillError


@dataclass(frozen=True)
class Target:
    """A hardware target and everything that differs per hardware: its name, the Prefect
    work pool whose workers run it, the runtimes it offers and their settings (ONNX
    Runtime's execution provider, how many layers llama.cpp offloads to a GPU: 0 none, -1
    all), which memory bounds decoding ('host' or 'gpu', measured by quantmill.measure), a
    probe returning None when this worker has the hardware, else why not, and the name of
    its accelerator (None for none). Its hardware identity is the worker's
    (hardware.local_hardware)."""

    name: str
    pool: str
    runtimes: tuple[str, ...]
    probe: Callable[[], str | None]
    accelerator: Callable[[], str | None]
    onnxruntime_provider: str | None = None
    llama_gpu_layers: int = 0
    decode_memory: str = "host"

    def unavailable(self) -> str | None:
        """Return why this worker cannot run the target, or None when it can."""
        return self.probe()

    def offers(self, runtime: str) -> bool:
        """Return whether this target runs models on runtime."""
        return runtime in self.runtimes


def _cpu() -> str | None:
    return None


def _nvidia_gpu() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this worker (nvidia-smi not found)"
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        return f"nvidia-smi failed: {err}"
    if done.returncode != 0 or "GPU" not in done.stdout:
        return f"nvidia-smi lists no GPU ({(done.stderr or done.stdout).strip()[:200]})"
    return None


def _no_accelerator() -> str | None:
    return None


def _gpu_name() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return "NVIDIA GPU (nvidia-smi unavailable)"
    return ", ".join(line.strip() for line in done.stdout.splitlines() if line.strip())


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("cpu", "cpu", ("onnxruntime", "llama.cpp", "transformers"), _cpu, _no_accelerator,
           onnxruntime_provider="CPUExecutionProvider"),
    # The GPU image installs onnxruntime-gpu, llama.cpp built with CUDA, and torchao; a torchao
    # format that does not beat BF16 here is stepped aside in benchmark_tables/decoder_lm_gpu.csv.
    Target("gpu", "gpu", ("onnxruntime", "llama.cpp", "torch-cuda"), _nvidia_gpu, _gpu_name,
           onnxruntime_provider="CUDAExecutionProvider", llama_gpu_layers=-1, decode_memory="gpu"),
)}
# The target every worker has: its own CPU, where evaluation runs and the flow describes itself.
HOST = TARGETS["cpu"]


def get_target(name: str) -> Target:
    """Return the target called name. Raises QuantmillError naming the known targets."""
    if name not in TARGETS:
        raise QuantmillError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    return TARGETS[name]


def targets_for(primary: str, others: list[str] | None = None) -> tuple[Target, ...]:
    """Return the targets called primary (first) and others, each once. Raises
    QuantmillError for an unknown name."""
    return tuple(get_target(name) for name in dict.fromkeys([primary, *(others or [])]))
