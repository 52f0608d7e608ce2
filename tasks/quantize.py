"""Quantize one attempt, and scan layerwise sensitivity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import task

from quantmill.data import Dataset
from quantmill.inspection import inspect_model
from quantmill.quantizers.onnx_runtime import QuantizeOptions, preprocessed, quantize
from quantmill.sensitivity import GroupScore, node_groups, scan
from tasks.policy import EPHEMERAL


@task(name="quantize", timeout_seconds=1800, **EPHEMERAL)
def quantize_task(model: Path, out_path: Path, options: QuantizeOptions, calibration: Dataset, cache_dir: Path) -> Path:
    """Return the path of the quantized model written for options."""
    return quantize(model, out_path, options, calibration, cache_dir)


@task(name="sensitivity-scan", timeout_seconds=3600, **EPHEMERAL)
def sensitivity_task(
    model: Path, options: QuantizeOptions, calibration: Dataset, evaluation: Dataset,
    baseline_outputs: np.ndarray, task_name: str, cache_dir: Path,
) -> tuple[GroupScore, ...]:
    """Return the weighted-node groups of the pre-processed graph ranked by sensitivity."""
    groups = node_groups(inspect_model(preprocessed(model, cache_dir)).quantizable_nodes)
    return scan(model, options, groups, calibration, evaluation, baseline_outputs, task_name, cache_dir)
