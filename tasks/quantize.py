"""Quantize one attempt, and scan layerwise sensitivity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import task

from quantmill.data import Dataset
from quantmill.inspection import inspect_model
from quantmill.quantizers.onnx_runtime import QuantizeOptions, preprocessed, quantize, quantized_path
from quantmill.sensitivity import GroupScore, node_groups, scan
from tasks.policy import cached


@task(name="quantize", timeout_seconds=1800, **cached(by_name=("out_path", "cache_dir")))
def quantize_task(model: Path, out_path: Path, options: QuantizeOptions, calibration: Dataset, cache_dir: Path) -> Path:
    """Return the path of the quantized model written for options."""
    return quantize(model, out_path, options, calibration, cache_dir)


def quantize_attempt(model: Path, options: QuantizeOptions, calibration: Dataset, cache_dir: Path) -> Path:
    """Return the quantized model for options, from cache when the cached file is still
    there; a cache record whose file was deleted is refreshed, not trusted."""
    out_path = quantized_path(cache_dir, options, calibration)
    return quantize_task.with_options(refresh_cache=not out_path.exists())(model, out_path, options, calibration, cache_dir)


@task(name="sensitivity-scan", timeout_seconds=3600, **cached(by_name=("cache_dir",)))
def sensitivity_task(
    model: Path, options: QuantizeOptions, calibration: Dataset, evaluation: Dataset,
    baseline_outputs: np.ndarray, task_name: str, cache_dir: Path,
) -> tuple[GroupScore, ...]:
    """Return the weighted-node groups of the pre-processed graph ranked by sensitivity."""
    groups = node_groups(inspect_model(preprocessed(model, cache_dir)).quantizable_nodes)
    return tuple(scan(model, options, groups, calibration, evaluation, baseline_outputs, task_name, cache_dir))
