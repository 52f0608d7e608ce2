"""Measurements of the machine a benchmark worker runs on: its peak memory, its memory bandwidth."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np


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
