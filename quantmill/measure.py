"""Measurements of the machine a benchmark worker runs on: its peak memory, its memory
bandwidth (the host's, or its GPU's)."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from quantmill.targets import Target


def peak_rss_bytes() -> int:
    """Return this process's peak resident memory in bytes."""
    # VmHWM belongs to this process image; ru_maxrss survives exec and would report the
    # parent's peak, since the worker is forked from a large flow process.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def memory_bandwidth_bytes_per_s(megabytes: int = 256, repeats: int = 5) -> float:
    """Return the best measured copy bandwidth of this machine (bytes read + written per s)."""
    source = np.ones(megabytes * (1 << 20) // 8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


def gpu_memory_bandwidth_bytes_per_s(gibibytes: int = 2, repeats: int = 20) -> float:
    """Return the best measured device-to-device copy bandwidth of this worker's first CUDA
    GPU (bytes read + written per s), through PyTorch. Raises RuntimeError when PyTorch here
    is not installed or sees no CUDA GPU."""
    try:
        import torch
    except ImportError as err:
        raise RuntimeError(f"measuring GPU memory bandwidth needs PyTorch with CUDA ({err})") from None
    if not torch.cuda.is_available():
        raise RuntimeError(f"PyTorch {torch.__version__} on this worker sees no CUDA GPU")
    source = torch.empty(gibibytes * (1 << 30) // 2, dtype=torch.bfloat16, device="cuda")
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        target.copy_(source)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * source.numel() * source.element_size() / best


def bandwidth_bytes_per_s(target: Target) -> float:
    """Return the measured memory bandwidth that bounds decoding on target: the GPU's where
    the target decodes from GPU memory, else the host's. Raises RuntimeError when the GPU's
    cannot be measured."""
    if target.decode_memory != "gpu":
        return memory_bandwidth_bytes_per_s()
    # In a process of its own, so that no CUDA context or cached GPU memory stays in the
    # process that starts the benchmark workers.
    done = subprocess.run([sys.executable, "-m", "quantmill.measure", "gpu"], capture_output=True, text=True,
                          check=False, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"measuring GPU memory bandwidth failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return float(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(gpu_memory_bandwidth_bytes_per_s() if sys.argv[1:] == ["gpu"] else memory_bandwidth_bytes_per_s())
