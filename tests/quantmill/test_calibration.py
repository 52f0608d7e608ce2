from pathlib import Path

import numpy as np

from quantmill.calibration import (
    FAIL,
    PASS,
    WARN,
    CalibrationPolicy,
    input_features,
    stratified_subsample,
    validate_calibration,
)
from quantmill.data import Dataset


def _dataset(pixels: np.ndarray, labels: np.ndarray | None = None, name: str = "d.npz") -> Dataset:
    return Dataset(Path(name), name, {"pixels": pixels.astype(np.float32)}, labels)


def _validate(calibration: Dataset, reference: Dataset, policy: CalibrationPolicy = CalibrationPolicy()):
    return validate_calibration(calibration, reference, policy, input_features(calibration), input_features(reference))


def test_same_distribution_passes_with_numbers():
    rng = np.random.default_rng(0)
    verdict = _validate(_dataset(rng.normal(size=(300, 8))), _dataset(rng.normal(size=(400, 8))))
    assert verdict.status == PASS, verdict.reasons
    assert verdict.features_tested == 8 and verdict.features_drifted == 0
    assert 0 < verdict.ks_statistic < 0.2 and verdict.ks_pvalue > 0.001


def test_shifted_calibration_data_fails_the_ks_test():
    rng = np.random.default_rng(1)
    verdict = _validate(_dataset(rng.normal(1.0, 1.0, (300, 8))), _dataset(rng.normal(size=(400, 8))))
    assert verdict.status == FAIL
    assert verdict.features_drifted == 8
    assert any("KS test" in reason for reason in verdict.reasons)


def test_narrow_range_fails_coverage():
    rng = np.random.default_rng(2)
    reference = rng.uniform(-1, 1, (400, 4))
    calibration = np.clip(rng.uniform(-1, 1, (300, 4)), -0.5, 0.5)
    verdict = _validate(_dataset(calibration), _dataset(reference), CalibrationPolicy(drifted_fraction_fail=1.0))
    assert verdict.status == FAIL
    assert verdict.in_range_fraction < 0.6
    assert any("calibration range" in reason for reason in verdict.reasons)


def test_size_bounds():
    rng = np.random.default_rng(3)
    reference = _dataset(rng.normal(size=(200, 4)))
    assert _validate(_dataset(rng.normal(size=(8, 4))), reference).status == FAIL
    assert _validate(_dataset(rng.normal(size=(40, 4))), reference).status == WARN


def test_large_inputs_are_tested_on_summary_statistics():
    rng = np.random.default_rng(4)
    verdict = _validate(_dataset(rng.normal(size=(100, 1000))), _dataset(rng.normal(size=(100, 1000))))
    assert verdict.features_tested == 4
    assert verdict.worst_feature.startswith("pixels:")


def test_stratified_subsample_keeps_label_shares():
    labels = np.array([0] * 600 + [1] * 300 + [2] * 100)
    subset = stratified_subsample(_dataset(np.zeros((1000, 2)), labels), 100, seed=0)
    assert len(subset) == 100
    assert np.bincount(subset.labels).tolist() == [60, 30, 10]
