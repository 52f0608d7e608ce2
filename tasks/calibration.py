"""Load the calibration and evaluation data and validate the calibration set."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from quantmill.calibration import CalibrationVerdict, stratified_subsample, validate_calibration
from quantmill.data import Dataset
from quantmill.models import Model, get_kind, prepare_data
from tasks.policy import EPHEMERAL


@task(name="load-data", timeout_seconds=600, **EPHEMERAL)
def load_data_task(model: Model, path: Path, task_name: str | None = None) -> Dataset:
    """Return the data set at path ready to feed model, checked to be scorable by
    task_name's metric when given (models.prepare_data: once per process)."""
    return prepare_data(model, path, task_name)


@task(name="validate-calibration", timeout_seconds=1800, **EPHEMERAL)
def validate_calibration_task(model: Model, calibration: Dataset, evaluation: Dataset) -> CalibrationVerdict:
    """Return the calibration verdict under the model kind's policy: size, KS tests of the
    kind's per-sample features against the evaluation data, range coverage."""
    kind = get_kind(model.kind)
    return validate_calibration(calibration, evaluation, kind.policy,
                                kind.features(model, calibration), kind.features(model, evaluation))


@task(name="subsample-calibration", timeout_seconds=300, **EPHEMERAL)
def subsample_task(model: Model, calibration: Dataset) -> Dataset:
    """Return the stratified subsample of the calibration set that quantization uses."""
    policy = get_kind(model.kind).policy
    return stratified_subsample(calibration, policy.max_samples, policy.seed)
