"""Is this calibration set fit to calibrate with? Size, two-sample Kolmogorov-Smirnov tests
of per-sample features (which the model kind chooses) against the evaluation data, and how
much of the evaluation inputs' range it covers. The same tests measure drift of fresh data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from quantmill.data import Dataset

PASS, WARN, FAIL = "pass", "warn", "fail"
# Above this many values per sample, KS runs on per-sample summary statistics instead of
# per feature: thousands of per-pixel tests say little and cost much.
MAX_PER_FEATURE = 256


@dataclass(frozen=True)
class CalibrationPolicy:
    """Thresholds for the verdict. alpha is the KS significance level before a Bonferroni
    correction over all features tested."""

    min_samples: int = 16
    recommended_samples: int = 64
    max_samples: int = 512
    alpha: float = 0.01
    drifted_fraction_fail: float = 0.25
    in_range_warn: float = 0.999
    in_range_fail: float = 0.99
    seed: int = 0


@dataclass(frozen=True)
class CalibrationVerdict:
    """The verdict with the numbers behind it.

    ks_statistic / ks_pvalue: the largest KS statistic over features and the smallest raw
    p-value; features_drifted counts features whose p-value falls below alpha / features_tested.
    in_range_fraction: share of evaluation input values inside the calibration set's range.
    ks_threshold: the p-value below which a feature counts as drifted (alpha over the
    features tested); ks_features: each tested feature's (name, D, p).
    """

    status: str
    n_samples: int
    n_used: int
    ks_statistic: float
    ks_pvalue: float
    features_tested: int
    features_drifted: int
    worst_feature: str
    in_range_fraction: float
    range_overlap: float
    data_sha256: str
    reference_sha256: str
    reasons: tuple[str, ...] = field(default=())
    ks_threshold: float = 0.0
    ks_features: tuple[tuple[str, float, float], ...] = field(default=())


def validate_calibration(
    calibration: Dataset, reference: Dataset, policy: CalibrationPolicy,
    calibration_features: dict[str, np.ndarray], reference_features: dict[str, np.ndarray],
) -> CalibrationVerdict:
    """Return the verdict on calibration measured against reference (the evaluation data):
    its size, KS tests of each feature (calibration_features against reference_features,
    by name), and range coverage of reference's floating-point inputs.

    Raises nothing for bad statistics: a verdict of "fail" carries the reasons.
    """
    n = len(calibration)
    reasons: list[str] = []
    status = PASS
    if n < policy.min_samples:
        status = FAIL
        reasons.append(f"{n} samples, below the minimum of {policy.min_samples}")
    elif n < policy.recommended_samples:
        status = WARN
        reasons.append(f"{n} samples, below the recommended {policy.recommended_samples}")
    n_used = min(n, policy.max_samples)
    if n > policy.max_samples:
        reasons.append(f"{n} samples; calibration uses a stratified subsample of {n_used}")

    tests, drifted, threshold, worst = _ks_tests(calibration_features, reference_features, policy.alpha)
    if tests and len(drifted) / len(tests) > policy.drifted_fraction_fail:
        status = FAIL
        reasons.append(
            f"KS test: {len(drifted)}/{len(tests)} features differ from the evaluation data "
            f"(p < {threshold:.2g}); worst {worst[0]} D={worst[1]:.3f}"
        )
    elif drifted:
        status = _worse(status, WARN)
        reasons.append(f"KS test: {len(drifted)}/{len(tests)} features differ; worst {worst[0]} D={worst[1]:.3f}")

    in_range, overlap = _coverage(calibration, reference)
    if in_range < policy.in_range_fail:
        status = FAIL
        reasons.append(f"only {in_range:.2%} of evaluation input values lie inside the calibration range")
    elif in_range < policy.in_range_warn:
        status = _worse(status, WARN)
        reasons.append(f"{in_range:.3%} of evaluation input values lie inside the calibration range")

    return CalibrationVerdict(
        status=status, n_samples=n, n_used=n_used,
        ks_statistic=float(worst[1]), ks_pvalue=float(min((t[2] for t in tests), default=1.0)),
        features_tested=len(tests), features_drifted=len(drifted), worst_feature=worst[0],
        in_range_fraction=in_range, range_overlap=overlap,
        data_sha256=calibration.sha256, reference_sha256=reference.sha256, reasons=tuple(reasons),
        ks_threshold=float(threshold), ks_features=tuple((name, float(d), float(pvalue)) for name, d, pvalue, *_ in tests),
    )


@dataclass(frozen=True)
class Drift:
    """A fresh sample against the stored one, feature by feature (two-sample KS tests,
    Bonferroni-corrected): drifted when any feature differs; the worst feature's statistic
    D and the smallest p-value."""

    drifted: bool
    features_tested: int
    features_drifted: int
    worst_feature: str
    ks_statistic: float
    ks_pvalue: float
    threshold: float
    stored_samples: int
    fresh_samples: int


def measure_drift(stored: dict[str, np.ndarray], fresh: dict[str, np.ndarray], alpha: float = 0.01) -> Drift:
    """Return how the fresh sample's features differ from the stored sample's, feature by
    feature. Raises KeyError if fresh lacks one of stored's features."""
    tests, drifted, threshold, worst = _ks_tests(stored, fresh, alpha)
    return Drift(
        drifted=bool(drifted), features_tested=len(tests), features_drifted=len(drifted), worst_feature=worst[0],
        ks_statistic=float(worst[1]), ks_pvalue=float(min((t[2] for t in tests), default=1.0)),
        threshold=threshold, stored_samples=_count(stored), fresh_samples=_count(fresh),
    )


def _count(features: dict[str, np.ndarray]) -> int:
    return len(next(iter(features.values()))) if features else 0


def _ks_tests(sample: dict[str, np.ndarray], reference: dict[str, np.ndarray], alpha: float):
    tests = [
        (name, *stats.ks_2samp(a, reference[name]))
        for name, a in sample.items()
        if np.ptp(a) > 0 or np.ptp(reference[name]) > 0 or a[0] != reference[name][0]
    ]
    threshold = alpha / max(len(tests), 1)
    drifted = [t for t in tests if t[2] < threshold]
    worst = max(tests, key=lambda t: t[1]) if tests else ("none", 0.0, 1.0)
    return tests, drifted, threshold, worst


def stratified_subsample(dataset: Dataset, size: int, seed: int) -> Dataset:
    """Return at most size samples of dataset, keeping each label's share when it has labels."""
    if len(dataset) <= size:
        return dataset
    rng = np.random.default_rng(seed)
    if dataset.labels is None:
        return dataset.take(np.sort(rng.choice(len(dataset), size, replace=False)))
    chosen = []
    for label in np.unique(dataset.labels):
        members = np.flatnonzero(dataset.labels == label)
        share = max(1, round(size * len(members) / len(dataset)))
        chosen.append(rng.choice(members, min(share, len(members)), replace=False))
    return dataset.take(np.sort(np.concatenate(chosen))[:size])


def _worse(a: str, b: str) -> str:
    order = (PASS, WARN, FAIL)
    return max(a, b, key=order.index)


def input_features(dataset: Dataset) -> dict[str, np.ndarray]:
    """Return per-sample features of a data set's model inputs by name: each value of a small
    float input, summary statistics of a large one, and for token ids how many are used
    and their mean."""
    found = {}
    for name, array in dataset.inputs.items():
        found |= dict(zip(*_features(name, array)))
    return found


def _features(name: str, array: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    flat = array.reshape(len(array), -1)
    if array.dtype.kind in "iub":
        # Token ids: their order is arbitrary, so compare how much of each sample is used
        # and the mean id, not id by id.
        used = flat != 0
        count = used.sum(axis=1).astype(np.float64)
        mean_id = np.where(count > 0, (flat * used).sum(axis=1) / np.maximum(count, 1), 0.0)
        return [f"{name}:nonzero_count", f"{name}:mean_value"], [count, mean_id]
    if flat.shape[1] <= MAX_PER_FEATURE:
        return [f"{name}[{i}]" for i in range(flat.shape[1])], list(flat.T.astype(np.float64))
    summaries = {"mean": flat.mean(1), "std": flat.std(1), "min": flat.min(1), "max": flat.max(1)}
    return [f"{name}:{k}" for k in summaries], [v.astype(np.float64) for v in summaries.values()]


def _coverage(calibration: Dataset, reference: Dataset) -> tuple[float, float]:
    inside, total, overlaps = 0, 0, []
    for name, cal in calibration.inputs.items():
        if cal.dtype.kind != "f":
            continue
        ref = reference.inputs[name]
        low, high = float(cal.min()), float(cal.max())
        inside += int(np.count_nonzero((ref >= low) & (ref <= high)))
        total += ref.size
        ref_low, ref_high = float(ref.min()), float(ref.max())
        span = ref_high - ref_low
        overlaps.append(1.0 if span == 0 else max(0.0, min(high, ref_high) - max(low, ref_low)) / span)
    return (inside / total if total else 1.0), (min(overlaps) if overlaps else 1.0)
