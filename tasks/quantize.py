"""Quantize one attempt, and scan layerwise sensitivity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import task

from quantmill.data import Dataset
from quantmill.formats import Format
from quantmill.isolation import in_worker
from quantmill.logprobs import LogProbs
from quantmill.metrics import get_metric
from quantmill.models import Model
from quantmill.sensitivity import GroupScore
from tasks.policy import cached
from tasks.progress import artifact_progress


@task(name="quantize", timeout_seconds=1800, **cached(by_name=("workdir",)))
def quantize_task(fmt: Format, model: Model, options: object, calibration: Dataset | None, workdir: Path) -> Path:
    """Return the path of the model quantized to fmt with options, quantized in the quantize
    worker process: a crash of the quantizer raises WorkerCrashed."""
    return in_worker("quantize", f"quantizing {fmt.name}", fmt.quantize, model, options,
                     calibration, workdir, progress=artifact_progress(f"quantize {fmt.name}: steps"))


def quantize_attempt(fmt: Format, model: Model, options: object, calibration: Dataset | None, workdir: Path) -> Path:
    """Return the quantized model, from cache when the cached file is still there; a cache
    record whose file was deleted is refreshed, not trusted. Calibration data only counts
    (in the cache key too) for options that read it."""
    calibration = calibration if fmt.uses_calibration(options) else None
    refresh = not fmt.output_path(model, options, calibration, workdir).exists()
    return quantize_task.with_options(refresh_cache=refresh)(fmt, model, options, calibration, workdir)


@task(name="sensitivity-scan", timeout_seconds=3600, **cached(by_name=("workdir",)))
def sensitivity_task(
    fmt: Format, model: Model, options: object, calibration: Dataset, evaluation: Dataset,
    reference: np.ndarray | LogProbs, task_name: str, workdir: Path,
) -> tuple[GroupScore, ...]:
    """Return the format's layer groups ranked by the metric drop with only that group
    quantized, measured on the evaluation's choosing half (the scan chooses)."""
    metric, outputs = get_metric(task_name), fmt.evaluation_runner()

    def score(path: Path) -> float:
        return metric.evaluate_model(reference, outputs, path, evaluation).accuracy_drop

    return fmt.sensitivity(model, options, calibration, evaluation, score, workdir,
                           artifact_progress(f"sensitivity scan of {fmt.name}: layer groups scored"))
