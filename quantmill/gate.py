"""The gate: may this result ship? passed, failed or manual_review, with reasons."""

from __future__ import annotations

from dataclasses import dataclass

from quantmill.attempts import Attempt
from quantmill.benchmark import Benchmark
from quantmill.calibration import FAIL, WARN, CalibrationVerdict
from quantmill.evaluation import drop_unit
from quantmill.lm_benchmark import LMBenchmark

PASSED, FAILED, MANUAL_REVIEW = "passed", "failed", "manual_review"


@dataclass(frozen=True)
class GateDecision:
    """The status, the reasons for it, and the index of the attempt that would ship."""

    status: str
    reasons: tuple[str, ...]
    chosen_attempt: int | None


def decide(
    calibration: CalibrationVerdict, attempts: tuple[Attempt, ...], baseline: Benchmark | LMBenchmark | None,
    max_accuracy_drop: float, hardware: str,
) -> GateDecision:
    """Return the gate decision.

    failed: the calibration data failed validation, or no attempt met the accuracy budget.
    manual_review: the best attempt met the budget but the calibration data only warned,
    or it was not measured faster than the full-precision baseline on this hardware (by
    the benchmark's headline figure: throughput at batch 32, or decode tokens/s).
    passed: otherwise, naming the first attempt within budget.
    """
    if calibration.status == FAIL:
        return GateDecision(FAILED, ("calibration data failed validation: " + "; ".join(calibration.reasons),), None)
    within = [o for o in attempts if o.evaluation.accuracy_drop <= max_accuracy_drop]
    if not within:
        best = min(attempts, key=lambda o: o.evaluation.accuracy_drop, default=None)
        unit = drop_unit(best.evaluation.metric_name) if best else ""
        detail = f"; best was {best.format} at {best.evaluation.accuracy_drop:.2f} {unit}" if best else ""
        return GateDecision(FAILED, (f"no attempt met the budget of {max_accuracy_drop:g}{detail}",), None)
    chosen = within[0]
    unit = drop_unit(chosen.evaluation.metric_name)
    reasons = [
        f"{chosen.format}: {chosen.evaluation.metric_name} drop {chosen.evaluation.accuracy_drop:.2f} {unit} "
        f"within the budget of {max_accuracy_drop:g} {unit}"
    ]
    review = []
    if calibration.status == WARN:
        review.append("calibration data warned: " + "; ".join(calibration.reasons))
    if chosen.benchmark is None or baseline is None:
        review.append("not benchmarked")
    else:
        value, label = chosen.benchmark.headline()
        ratio = value / baseline.headline()[0]
        line = f"{ratio:.2f}x the full-precision baseline's {label} on {hardware}"
        (review if ratio < 1.0 else reasons).append(("slower than full precision: " if ratio < 1.0 else "") + line)
    if review:
        return GateDecision(MANUAL_REVIEW, tuple(reasons + review), chosen.index)
    return GateDecision(PASSED, tuple(reasons), chosen.index)
