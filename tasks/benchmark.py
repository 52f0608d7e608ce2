"""Benchmark models on this worker's hardware."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from quantmill.benchmark import Benchmark, benchmark_models
from quantmill.data import Dataset
from quantmill.hardware import Hardware, local_cpu
from tasks.policy import EPHEMERAL


@task(name="benchmark", timeout_seconds=1800, **EPHEMERAL)
def benchmark_task(models: dict[str, Path], data: Dataset, seconds_per_batch: float) -> dict[str, Benchmark]:
    """Return a Benchmark per labelled model, measured one after another on the same feeds."""
    return benchmark_models(models, data, seconds_per_batch)


@task(name="describe-hardware", **EPHEMERAL)
def hardware_task(runtime: str | None = None) -> Hardware:
    """Return the hardware this worker benchmarks on, with the runtime (default ONNX Runtime)."""
    return local_cpu(runtime)
