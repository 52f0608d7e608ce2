"""ONNX Runtime: the evaluation runner (a model's outputs on a data set) and the benchmark
harness for ONNX models.

Each model is loaded and timed in a fresh Python process, so load
time and peak memory belong to that model alone. The FP32 baseline is measured in the same
run with the same runtime, inputs and thread count, and the models take turns over several
rounds, each figure being the median over rounds, so that a slow spell of a shared machine
does not land on one model alone.

Run as `python -m quantmill.runtimes.onnxruntime MODEL FEEDS.npz BATCHES SECONDS PROVIDER` it prints
one JSON object with the measurements.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quantmill.data import Dataset
from quantmill.errors import QuantmillError
from quantmill.isolation import in_worker, run_command
from quantmill.measure import peak_rss_bytes
from quantmill.progress import Progress
from quantmill.runtimes.decode import interleaved_rounds
from quantmill.speed import LATENCY, THROUGHPUT, settled
from quantmill.targets import Target

BATCH_SIZES = (1, 32)
MIN_ITERATIONS = 10
# Interleaved rounds: enough paired ratios for a confidence interval (quantmill/speed.py);
# more, up to MAX_ROUNDS, while a verdict is still within the noise.
ROUNDS, MAX_ROUNDS = 5, 15
MAX_ITERATIONS = 500
EVAL_BATCH = 64
# One model's timed loop is bounded by MAX_ITERATIONS and the seconds per batch; a worker
# still running after this long is hung.
WORKER_TIMEOUT_S = 900


@dataclass(frozen=True)
class Benchmark:
    """Measured on one model: load and cold first-inference time (ms), warm latency
    percentiles per batch size (ms), throughput per batch size (samples/s), the worker's
    peak resident memory and its growth over the pre-load baseline (bytes), file size, and
    the timed iterations summed over rounds; and each round's throughput per batch size, in
    round order, which the speed comparison pairs with the baseline's round by round."""

    load_ms: float
    cold_ms: float
    latency_ms: dict[str, dict[str, float]]
    throughput: dict[str, float]
    peak_rss_bytes: int
    peak_rss_delta_bytes: int
    size_bytes: int
    iterations: dict[str, int]
    rounds: int
    throughput_rounds: dict[str, list[float]] = field(default_factory=dict)

    def headline(self) -> tuple[float, str]:
        """Return the figure the gate compares with the baseline, and its name."""
        return self.throughput["32"], "samples/s at batch 32"

    def headline_rounds(self) -> list[float]:
        """Return the headline figure of each round, in the order the rounds ran."""
        return self.throughput_rounds.get("32", [])

    def speed_rounds(self, objective: str) -> tuple[list[float], str]:
        """Return the per-round figure that objective judges (higher is better) and its
        name: throughput at batch 32, or at batch 1 (the inverse of latency) for latency."""
        if objective == LATENCY:
            return self.throughput_rounds.get("1", []), "samples/s at batch 1 (1 / latency)"
        return self.headline_rounds(), self.headline()[1]


def benchmark_models(
    models: dict[str, Path], data: Dataset, seconds_per_batch: float = 1.0, rounds: int = ROUNDS,
    provider: str = "CPUExecutionProvider", pair: tuple[str, str] | None = None, max_rounds: int = MAX_ROUNDS,
    objective: str = THROUGHPUT, progress: Progress | None = None,
) -> dict[str, Benchmark | QuantmillError]:
    """Return a Benchmark for each labelled model, the models taking turns on the same
    feeds, run by ONNX Runtime's provider: rounds rounds, and more for pair's two models
    alone, up to max_rounds, while the speed of pair's model (the attempt the gate judges)
    against pair's baseline, at the batch size objective judges, is still within the noise
    (speed.settled). progress hears (rounds done, rounds planned) after each round.

    A model whose measuring process crashes or runs past WORKER_TIMEOUT_S maps to that
    error (WorkerCrashed, WorkerTimeout) instead, and is measured no more.
    """
    judged_batch = 1 if objective == LATENCY else max(BATCH_SIZES)
    with tempfile.TemporaryDirectory(prefix="quantmill-bench-") as scratch:
        feeds = Path(scratch) / "feeds.npz"
        np.savez(feeds, **_feeds(data, max(BATCH_SIZES)))
        runs, crashed = interleaved_rounds(
            list(models), lambda label: _run_worker(models[label], feeds, seconds_per_batch, provider),
            lambda runs, pair: _settled(runs, pair, judged_batch), pair, rounds, max_rounds, progress)
    return {**crashed, **{label: _median(results) for label, results in runs.items()}}


def _settled(runs: dict[str, list[dict]], pair: tuple[str, str] | None, batch: int) -> bool:
    # Only the batch size the gate judges is measured until settled; the other's verdict is
    # reported as it stands after the regular rounds.
    return settled({label: [r["throughput"][str(batch)] for r in results] for label, results in runs.items()}, pair)


def _median(results: list[dict]) -> Benchmark:
    def med(values) -> float:
        return float(np.median(list(values)))

    batches = results[0]["throughput"]
    return Benchmark(
        load_ms=med(r["load_ms"] for r in results),
        cold_ms=med(r["cold_ms"] for r in results),
        latency_ms={b: {p: med(r["latency_ms"][b][p] for r in results) for p in results[0]["latency_ms"][b]} for b in batches},
        throughput={b: med(r["throughput"][b] for r in results) for b in batches},
        peak_rss_bytes=max(r["peak_rss_bytes"] for r in results),
        peak_rss_delta_bytes=max(r["peak_rss_delta_bytes"] for r in results),
        size_bytes=results[0]["size_bytes"],
        iterations={b: sum(r["iterations"][b] for r in results) for b in batches},
        rounds=len(results),
        throughput_rounds={b: [r["throughput"][b] for r in results] for b in batches},
    )


def _feeds(data: Dataset, size: int) -> dict[str, np.ndarray]:
    index = np.resize(np.arange(len(data)), size)
    return next(data.take(index).batches(size))


def _run_worker(model: Path, feeds: Path, seconds: float, provider: str) -> dict:
    command = [sys.executable, "-m", "quantmill.runtimes.onnxruntime", str(model), str(feeds), ",".join(map(str, BATCH_SIZES)),
               str(seconds), provider]
    out = run_command(command, f"onnxruntime benchmark of {model.name}", WORKER_TIMEOUT_S)
    return json.loads(out.strip().splitlines()[-1])


def _measure(model: Path, feeds: dict[str, np.ndarray], batches: tuple[int, ...], seconds: float, provider: str) -> dict:
    import onnxruntime as ort

    baseline_rss = peak_rss_bytes()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = os.cpu_count() or 1
    options.log_severity_level = 3
    start = time.perf_counter()
    session = ort.InferenceSession(str(model), options, providers=[provider])
    load_ms = 1e3 * (time.perf_counter() - start)
    first = {k: v[:1] for k, v in feeds.items()}
    start = time.perf_counter()
    session.run(None, first)
    cold_ms = 1e3 * (time.perf_counter() - start)
    latency, throughput, iterations = {}, {}, {}
    for batch in batches:
        feed = {k: v[:batch] for k, v in feeds.items()}
        for _ in range(3):
            session.run(None, feed)
        times = []
        deadline = time.perf_counter() + seconds
        while len(times) < MAX_ITERATIONS and (len(times) < MIN_ITERATIONS or time.perf_counter() < deadline):
            start = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - start)
        ms = 1e3 * np.asarray(times)
        latency[str(batch)] = {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}
        throughput[str(batch)] = float(batch * len(times) / sum(times))
        iterations[str(batch)] = len(times)
    peak = peak_rss_bytes()
    return {
        "load_ms": load_ms, "cold_ms": cold_ms, "latency_ms": latency, "throughput": throughput,
        "peak_rss_bytes": peak, "peak_rss_delta_bytes": peak - baseline_rss,
        "size_bytes": model.stat().st_size, "iterations": iterations,
    }


def session(model_path: Path, provider: str = "CPUExecutionProvider", threads: int = 0):
    """Return an InferenceSession for model_path on provider with full graph optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_path), options, providers=[provider])


def predict(model_path: Path, dataset: Dataset) -> np.ndarray:
    """Return the model's first output over every sample of dataset, stacked in order, run
    on this machine's CPU."""
    runner = session(model_path)
    return np.concatenate([runner.run(None, feed)[0] for feed in dataset.batches(EVAL_BATCH)]).astype(np.float64)


class OnnxRuntime:
    """ONNX Runtime as quantmill runs it: CPU provider for evaluation, the target's provider
    for benchmarks."""

    name = "onnxruntime"
    measurement = Benchmark

    def unavailable(self, target: Target) -> str | None:
        """Return why this worker's onnxruntime cannot run on target, or None."""
        import onnxruntime as ort

        provider = target.onnxruntime_provider
        if provider is None:
            return f"target {target.name!r} names no ONNX Runtime execution provider"
        if provider not in ort.get_available_providers():
            return (f"onnxruntime {ort.__version__} on this worker has no {provider} "
                    f"(available: {', '.join(ort.get_available_providers())})")
        return None

    def describe(self, target: Target) -> str:
        """Return e.g. 'onnxruntime 1.32.0 CPUExecutionProvider'."""
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__} {target.onnxruntime_provider}"

    def outputs(self, path: Path, dataset: Dataset) -> np.ndarray:
        """Return the model's outputs on dataset (predict), computed in this runtime's worker
        process (quantmill.isolation): a crash there raises WorkerCrashed."""
        return in_worker(self.name, f"onnxruntime evaluating {path.name}", predict, path, dataset)

    def benchmark(
        self, models: dict[str, Path], data: Dataset, target: Target, seconds: float, pair: tuple[str, str] | None = None,
        objective: str = THROUGHPUT, progress: Progress | None = None,
    ) -> dict[str, Benchmark]:
        """Return a Benchmark per labelled model, measured on target's provider
        (benchmark_models; pair: the judged attempt's label and its baseline's, settled on
        the figure objective judges)."""
        return benchmark_models(models, data, seconds, provider=target.onnxruntime_provider, pair=pair, objective=objective,
                                progress=progress)


def main(argv: list[str]) -> int:
    """Worker entry point: measure one model and print the JSON result; return the exit code."""
    model, feeds_path, batches, seconds, provider = Path(argv[0]), Path(argv[1]), argv[2], float(argv[3]), argv[4]
    with np.load(feeds_path, allow_pickle=False) as archive:
        feeds = {name: archive[name] for name in archive.files}
    result = _measure(model, feeds, tuple(int(b) for b in batches.split(",")), seconds, provider)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
