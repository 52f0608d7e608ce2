"""What decoding language models is measured by, for every runtime that decodes (llama.cpp,
transformers): load time, prompt and decode tokens/s, peak memory and size, each model in a
fresh process; beside them the decode bound from measured memory bandwidth (bytes of
weights read per token / bandwidth) and the fraction of it reached."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quantmill.data import Dataset
from quantmill.errors import QuantmillError
from quantmill.isolation import WorkerCrashed, WorkerTimeout, run_command
from quantmill.logprobs import LogProbs
from quantmill.measure import bandwidth_bytes_per_s
from quantmill.progress import Progress, planned_rounds
from quantmill.speed import settled
from quantmill.targets import HOST, Target

PROMPT_TOKENS = 128
# Interleaved rounds: enough paired ratios for a confidence interval (quantmill/speed.py);
# more, up to MAX_ROUNDS, while a verdict is still within the noise.
ROUNDS, MAX_ROUNDS = 3, 9
# A fixed number of tokens per model; a worker still running after this long is hung.
WORKER_TIMEOUT_S = 1800


@dataclass(frozen=True)
class LMBenchmark:
    """One language model on this machine: load time (ms), prompt processing and decode
    throughput (tokens/s), peak RSS (bytes), size on disk, bytes of weights read per
    decoded token, the decode bound (tokens/s) at the measured bandwidth, and the fraction
    of it reached: medians over interleaved rounds, each in a fresh process; and each
    round's decode tokens/s, in round order."""

    load_ms: float
    prompt_tokens_per_s: float
    decode_tokens_per_s: float
    peak_rss_bytes: int
    size_bytes: int
    bytes_per_token: int
    decode_bound_tokens_per_s: float
    fraction_of_bound: float
    decode_rounds: list[float] = field(default_factory=list)

    def headline(self) -> tuple[float, str]:
        """Return the figure the gate compares with the baseline, and its name."""
        return self.decode_tokens_per_s, "decode tokens/s"

    def headline_rounds(self) -> list[float]:
        """Return the decode tokens/s of each round, in the order the rounds ran."""
        return self.decode_rounds

    def speed_rounds(self, objective: str) -> tuple[list[float], str]:
        """Return the per-round decode tokens/s and its name: decoding at batch 1 is both
        the throughput and (its inverse) the per-token latency."""
        return self.decode_rounds, "decode tokens/s at batch 1"


class DecodeRuntime:
    """What every runtime that decodes shares: its outputs are logits on token windows, and
    its benchmark measures each model once per round in a fresh process (measure_once: by
    default `python -m module`). A subclass names itself, its decode length, its module
    (or its own measure_once), and gives logits(path, windows)."""

    name: str
    module: str
    decode_tokens: int
    measurement = LMBenchmark

    def logits(self, path: Path, windows: np.ndarray) -> np.ndarray:
        """Return float32 logits [windows, positions, vocab] of the model at path."""
        raise NotImplementedError

    def unavailable(self, target: Target) -> str | None:
        """Return why this runtime cannot run on target here, or None."""
        return None if target.offers(self.name) else f"target {target.name!r} does not offer {self.name}"

    def log_probs(self, path: Path, windows: np.ndarray) -> LogProbs:
        """Return the model's log-probabilities on token windows, on disk (quantmill.logprobs)."""
        raise NotImplementedError

    def outputs(self, path: Path, dataset: Dataset) -> LogProbs:
        """Return the log-probabilities on dataset's token windows (log_probs): at a real
        vocabulary they are too large for memory."""
        return self.log_probs(path, dataset.inputs["input_ids"])

    def measure_once(self, path: Path, prompt_tokens: int, decode_tokens: int, target: Target) -> dict:
        """Return one measurement of the model at path on target, made in a fresh process:
        load_ms, prompt_tokens_per_s, decode_tokens_per_s, peak_rss_bytes, size_bytes and
        bytes_per_token. By default `python -m module MODEL PROMPT DECODE` prints them.
        Raises WorkerCrashed or WorkerTimeout (after WORKER_TIMEOUT_S) when that process
        fails."""
        out = run_command([sys.executable, "-m", self.module, str(path), str(prompt_tokens), str(decode_tokens)],
                          f"{self.module} benchmark of {path.name}", WORKER_TIMEOUT_S)
        return json.loads(out.strip().splitlines()[-1])

    def benchmark(
        self, models: dict[str, Path], data: Dataset, target: Target, seconds: float, pair: tuple[str, str] | None = None,
        objective: str | None = None, progress: Progress | None = None,
    ) -> dict[str, LMBenchmark]:
        """Return an LMBenchmark per labelled model, each measured by measure_once
        (benchmark_in_workers); every objective judges decode tokens/s at batch 1."""
        return benchmark_in_workers(
            lambda path: self.measure_once(path, PROMPT_TOKENS, self.decode_tokens, target), models, pair=pair,
            target=target, progress=progress)


def benchmark_in_workers(
    measure: Callable[[Path], dict], models: dict[str, Path], rounds: int = ROUNDS,
    pair: tuple[str, str] | None = None, max_rounds: int = MAX_ROUNDS, target: Target = HOST,
    progress: Progress | None = None,
) -> dict[str, LMBenchmark | QuantmillError]:
    """Return an LMBenchmark per labelled model, the models taking turns over rounds
    rounds, and more for pair's two models alone, up to max_rounds, while the decode speed of pair's model (the attempt
    the gate judges) against pair's baseline is still within the noise (speed.settled); each
    measurement by measure(path), a fresh process (DecodeRuntime.measure_once). The decode
    bound is the measured memory bandwidth of target (the GPU's on 'gpu'). progress hears
    (rounds done, rounds planned) after each round.

    A model whose measuring process crashes or runs past its time limit maps to that error
    (WorkerCrashed, WorkerTimeout) instead, and is measured no more.
    """
    bandwidth = bandwidth_bytes_per_s(target)
    runs, crashed = interleaved_rounds(
        list(models), lambda label: measure(models[label]),
        lambda runs, pair: settled(_decoded(runs), pair), pair, rounds, max_rounds, progress)
    results: dict = dict(crashed)
    for label, measured in runs.items():
        decode = [r["decode_tokens_per_s"] for r in measured]
        per_token = measured[0]["bytes_per_token"]
        bound = bandwidth / per_token
        median_decode = float(np.median(decode))
        results[label] = LMBenchmark(
            load_ms=float(np.median([r["load_ms"] for r in measured])),
            prompt_tokens_per_s=float(np.median([r["prompt_tokens_per_s"] for r in measured])),
            decode_tokens_per_s=median_decode, peak_rss_bytes=max(r["peak_rss_bytes"] for r in measured),
            size_bytes=measured[0]["size_bytes"], bytes_per_token=per_token, decode_bound_tokens_per_s=bound,
            fraction_of_bound=median_decode / bound, decode_rounds=decode,
        )
    return results


def _decoded(runs: dict[str, list[dict]]) -> dict[str, list[float]]:
    return {label: [r["decode_tokens_per_s"] for r in measured] for label, measured in runs.items()}


def interleaved_rounds(
    labels: list[str], run_one: Callable[[str], dict], is_settled: Callable[[dict, tuple[str, str] | None], bool],
    pair: tuple[str, str] | None, rounds: int, max_rounds: int, progress: Progress | None,
) -> tuple[dict[str, list[dict]], dict[str, QuantmillError]]:
    """Return each label's measurements (run_one(label), one a round, the labels taking turns)
    over rounds rounds, and more for pair's two labels alone, up to max_rounds, while
    is_settled(runs, pair) says the judged ratio is still within the noise; and the labels
    whose measuring process crashed (they are measured no more, and the others go on).
    progress hears (rounds done, rounds planned) after each round."""
    runs: dict[str, list[dict]] = {label: [] for label in labels}
    crashed: dict[str, QuantmillError] = {}
    done = 0
    more = True
    while more:
        # Extra rounds measure only the judged pair, still interleaved.
        for label in labels if done < rounds else pair:
            if label in crashed:
                continue
            try:
                runs[label].append(run_one(label))
            except (WorkerCrashed, WorkerTimeout) as err:
                crashed[label] = err
        done += 1
        pair_lives = pair is not None and not set(pair) & set(crashed)
        more = done < rounds or (done < max_rounds and pair_lives and not is_settled(runs, pair))
        if progress is not None:
            progress(done, planned_rounds(done, more, rounds, max_rounds))
    return {label: measured for label, measured in runs.items() if label not in crashed}, crashed
