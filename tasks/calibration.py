"""Load the calibration and evaluation data and validate the calibration set."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from quantmill.calibration import CalibrationPolicy, CalibrationVerdict, stratified_subsample, validate_calibration
from quantmill.data import Dataset, load_dataset
from quantmill.inspection import ModelProfile
from quantmill.sources import ModelRef
from tasks.policy import EPHEMERAL


@task(name="load-data", **EPHEMERAL)
def load_data_task(path: Path, profile: ModelProfile, model: ModelRef) -> Dataset:
    """Return the data set at path shaped for the model's inputs."""
    return load_dataset(path, profile.inputs, model.tokenizer_dir)


@task(name="validate-calibration", **EPHEMERAL)
def validate_calibration_task(calibration: Dataset, evaluation: Dataset, policy: CalibrationPolicy) -> CalibrationVerdict:
    """Return the calibration verdict: size, KS test against the evaluation inputs, range coverage."""
    return validate_calibration(calibration, evaluation, policy)


@task(name="subsample-calibration", **EPHEMERAL)
def subsample_task(calibration: Dataset, policy: CalibrationPolicy) -> Dataset:
    """Return the stratified subsample of the calibration set that quantization uses."""
    return stratified_subsample(calibration, policy.max_samples, policy.seed)
