"""Tasks of the recalibration sweep: find production versions, fetch the calibration
samples each was quantized with, measure drift against fresh data, split fresh data."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from quantmill.calibration import Drift, measure_drift
from quantmill.data import split_file
from quantmill.models import get_kind, resolve_model
from quantmill.tracking.registry import AliasedVersion, download_run_file, versions_with_alias
from quantmill.tracking.runs import CALIBRATION_SAMPLE
from tasks.policy import EPHEMERAL, retried


@task(name="find-aliased-versions", timeout_seconds=120, **retried(), **EPHEMERAL)
def aliased_versions_task(alias: str) -> list[AliasedVersion]:
    """Return every registered model version carrying alias."""
    return versions_with_alias(alias)


@task(name="fetch-quantization-record", timeout_seconds=600, **retried(), **EPHEMERAL)
def quantization_record_task(run_id: str, workdir: Path) -> tuple[dict, Path]:
    """Return the report and the calibration samples that run run_id logged."""
    report = json.loads(download_run_file(run_id, "report.json", workdir).read_text())
    return report, download_run_file(run_id, CALIBRATION_SAMPLE, workdir)


@task(name="measure-drift", timeout_seconds=1800, **EPHEMERAL)
def drift_task(model_uri: str, task_name: str, stored: Path, fresh: Path, alpha: float, workdir: Path) -> Drift:
    """Return the drift of the fresh data from the stored calibration samples, compared on
    the per-sample features the model's kind chooses (input features for ONNX models,
    per-window full-precision log-perplexity for language models)."""
    model = resolve_model(model_uri, task_name, workdir)
    kind = get_kind(model.kind)
    stored_features = kind.features(model, kind.load_samples(model, stored))
    return measure_drift(stored_features, kind.features(model, kind.load_data(model, fresh)), alpha)


@task(name="split-fresh-data", timeout_seconds=300, **EPHEMERAL)
def split_task(path: Path, out_dir: Path, seed: int) -> tuple[Path, Path]:
    """Return (calibration, evaluation) halves of the fresh data, shuffled with seed."""
    return split_file(path, out_dir, 0.5, seed)
