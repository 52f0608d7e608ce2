"""What decoding language models is measured by, for every runtime that decodes (llama.cpp,
transformers): load time, prompt and decode tokens/s, peak memory and size, each model in a
fresh process; beside them the decode bound from measured memory bandwidth (bytes of
weights read per token / bandwidth) and the fraction of it reached."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from quantmill.measure import memory_bandwidth_bytes_per_s

PROMPT_TOKENS = 128
# A fixed number of tokens per model; a worker still running after this long is hung.
WORKER_TIMEOUT_S = 1800


@dataclass(frozen=True)
class LMBenchmark:
    """One language model on this machine: load time (ms), prompt processing and decode
    throughput (tokens/s), peak RSS (bytes), size on disk, bytes of weights read per
    decoded token, the decode bound (tokens/s) at the measured bandwidth, and the fraction
    of it reached."""

    load_ms: float
    prompt_tokens_per_s: float
    decode_tokens_per_s: float
    peak_rss_bytes: int
    size_bytes: int
    bytes_per_token: int
    decode_bound_tokens_per_s: float
    fraction_of_bound: float

    def headline(self) -> tuple[float, str]:
        """Return the figure the gate compares with the baseline, and its name."""
        return self.decode_tokens_per_s, "decode tokens/s"


def benchmark_in_workers(module: str, models: dict[str, Path], prompt_tokens: int, decode_tokens: int) -> dict[str, LMBenchmark]:
    """Return an LMBenchmark per labelled model, each measured by `python -m module MODEL
    PROMPT DECODE` in a fresh process, which prints one JSON object (with bytes_per_token).

    Raises RuntimeError with the worker's last error line when a worker fails, or when it
    runs past WORKER_TIMEOUT_S.
    """
    bandwidth = memory_bandwidth_bytes_per_s()
    results = {}
    for label, path in models.items():
        try:
            done = subprocess.run(
                [sys.executable, "-m", module, str(path), str(prompt_tokens), str(decode_tokens)],
                capture_output=True, text=True, check=False, timeout=WORKER_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{module} benchmark of {path} ran past {WORKER_TIMEOUT_S} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"{module} benchmark of {path} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        raw = json.loads(done.stdout.strip().splitlines()[-1])
        bound = bandwidth / raw["bytes_per_token"]
        results[label] = LMBenchmark(**raw, decode_bound_tokens_per_s=bound, fraction_of_bound=raw["decode_tokens_per_s"] / bound)
    return results
