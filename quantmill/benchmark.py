"""The benchmark harness: each model is loaded and timed in a fresh Python process, so load
time and peak memory belong to that model alone. The FP32 baseline is measured in the same
run with the same runtime, inputs and thread count, and the models take turns over several
rounds, each figure being the median over rounds, so that a slow spell of a shared machine
does not land on one model alone.

Run as `python -m quantmill.benchmark MODEL FEEDS.npz BATCHES SECONDS` it prints one JSON
object with the measurements.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from quantmill.data import Dataset
from quantmill.hardware import PROVIDERS, Hardware, HardwareUnavailable, local_hardware

BATCH_SIZES = (1, 32)
MIN_ITERATIONS = 10
MAX_ITERATIONS = 500


@dataclass(frozen=True)
class Benchmark:
    """Measured on one model: load and cold first-inference time (ms), warm latency
    percentiles per batch size (ms), throughput per batch size (samples/s), the worker's
    peak resident memory and its growth over the pre-load baseline (bytes), file size, and
    the timed iterations summed over rounds."""

    load_ms: float
    cold_ms: float
    latency_ms: dict[str, dict[str, float]]
    throughput: dict[str, float]
    peak_rss_bytes: int
    peak_rss_delta_bytes: int
    size_bytes: int
    iterations: dict[str, int]
    rounds: int

    def headline(self) -> tuple[float, str]:
        """Return the figure the gate compares with the baseline, and its name."""
        return self.throughput["32"], "samples/s at batch 32"


def benchmark_models(
    models: dict[str, Path], data: Dataset, seconds_per_batch: float = 1.0, rounds: int = 3,
    provider: str = "CPUExecutionProvider",
) -> dict[str, Benchmark]:
    """Return a Benchmark for each labelled model, the models taking turns for rounds rounds
    on the same feeds, run by ONNX Runtime's provider.

    Raises RuntimeError with the worker's last error line if a worker fails.
    """
    runs: dict[str, list[dict]] = {label: [] for label in models}
    with tempfile.TemporaryDirectory(prefix="quantmill-bench-") as scratch:
        feeds = Path(scratch) / "feeds.npz"
        np.savez(feeds, **_feeds(data, max(BATCH_SIZES)))
        for _ in range(rounds):
            for label, path in models.items():
                runs[label].append(_run_worker(path, feeds, seconds_per_batch, provider))
    return {label: _median(results) for label, results in runs.items()}


@dataclass(frozen=True)
class TargetBenchmarks:
    """What one hardware target measured: a Benchmark per labelled model (the full-precision
    baseline under "fp32"), on which hardware, by which flow run; or, when it measured
    nothing, the reason it was not benchmarked."""

    target: str
    benchmarks: dict[str, Benchmark]
    hardware: Hardware | None = None
    reason: str | None = None
    flow_run: str | None = None

    @property
    def measured(self) -> bool:
        """Return whether this target measured every model it was given."""
        return bool(self.benchmarks) and self.reason is None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict that from_dict() reads back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TargetBenchmarks:
        """Return the TargetBenchmarks that to_dict() wrote. Raises KeyError/TypeError on another shape."""
        hardware = data.get("hardware")
        return cls(
            target=data["target"],
            benchmarks={label: Benchmark(**b) for label, b in data["benchmarks"].items()},
            hardware=Hardware(**{**hardware, "isa": tuple(hardware["isa"])}) if hardware else None,
            reason=data.get("reason"), flow_run=data.get("flow_run"),
        )


def benchmark_target(target: str, models: dict[str, Path], data: Dataset, seconds_per_batch: float = 1.0) -> TargetBenchmarks:
    """Return the labelled models measured on this machine's hardware for target, or, when
    this machine cannot run that target, a TargetBenchmarks with the reason and no figures.

    Raises RuntimeError if a benchmark worker fails.
    """
    try:
        hardware = local_hardware(target)
    except HardwareUnavailable as err:
        return TargetBenchmarks(target, {}, reason=str(err))
    return TargetBenchmarks(target, benchmark_models(models, data, seconds_per_batch, provider=PROVIDERS[target]), hardware)


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
    )


def _feeds(data: Dataset, size: int) -> dict[str, np.ndarray]:
    index = np.resize(np.arange(len(data)), size)
    return next(data.take(index).batches(size))


def _run_worker(model: Path, feeds: Path, seconds: float, provider: str) -> dict:
    command = [sys.executable, "-m", "quantmill.benchmark", str(model), str(feeds), ",".join(map(str, BATCH_SIZES)),
               str(seconds), provider]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"benchmark of {model} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_bytes() -> int:
    # VmHWM belongs to this process image; ru_maxrss survives exec and would report the
    # parent's peak, since the worker is forked from a large flow process.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


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
