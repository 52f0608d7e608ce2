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
    """A hardware target: its name, work pool, the runtimes it offers, and a probe returning
    None when this worker has the hardware, else the reason it has not."""

    name: str
    pool: str
    runtimes: tuple[str, ...]
    probe: Callable[[], str | None]
    accelerator: Callable[[], str | None]
    summary: str

    def unavailable(self) -> str | None:
        """Return why this worker cannot run the target, or None when it can."""
        return self.probe()


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
           "the worker's CPU: ONNX Runtime's CPU provider, llama.cpp, PyTorch"),
    # The GPU image installs onnxruntime-gpu and llama-cpp-python built with CUDA; torchao's
    # FP8/INT4 are not offered until they beat BF16 on a GPU here (README, "On a GPU").
    Target("gpu", "gpu", ("onnxruntime", "llama.cpp"), _nvidia_gpu, _gpu_name,
           "an NVIDIA GPU: ONNX Runtime's CUDA provider, llama.cpp's CUDA backend"),
)}


def get_target(name: str) -> Target:
    """Return the target called name. Raises QuantmillError naming the known targets."""
    if name not in TARGETS:
        raise QuantmillError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    return TARGETS[name]
