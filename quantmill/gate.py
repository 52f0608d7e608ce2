"""The gate: may this result ship? passed, failed or manual_review, with reasons."""

from __future__ import annotations

from dataclasses import dataclass

from quantmill.attempts import Attempt
from quantmill.benchmark import Benchmark
from quantmill.calibration import FAIL, WARN, CalibrationVerdict

PASSED, FAILED, MANUAL_REVIEW = "passed", "failed", "manual_review"
GATE_BATCH = "32"


@dataclass(frozen=True)
class GateDecision:
    """The status, the reasons for it, and the index of the attempt that would ship."""

    status: str
    reasons: tuple[str, ...]
    chosen_attempt: int | None


def decide(
    calibration: CalibrationVerdict, attempts: tuple[Attempt, ...], baseline: Benchmark | None,
    max_accuracy_drop: float, hardware: str,
) -> GateDecision:
    """Return the gate decision.

    failed: the calibration data failed validation, or no attempt met the accuracy budget.
    manual_review: the best attempt met the budget but the calibration data only warned,
    or it was not measured faster than FP32 at batch 32 on this hardware.
    passed: otherwise, naming the first attempt within budget.
    """
    if calibration.status == FAIL:
        return GateDecision(FAILED, ("calibration data failed validation: " + "; ".join(calibration.reasons),), None)
    within = [o for o in attempts if o.evaluation.accuracy_drop <= max_accuracy_drop]
    if not within:
        best = min(attempts, key=lambda o: o.evaluation.accuracy_drop, default=None)
        detail = f"; best was {best.format} at {best.evaluation.accuracy_drop:.2f} pts" if best else ""
        return GateDecision(FAILED, (f"no attempt met the {max_accuracy_drop:g}-point budget{detail}",), None)
    chosen = within[0]
    reasons = [
        f"{chosen.format}: {chosen.evaluation.metric_name} drop {chosen.evaluation.accuracy_drop:.2f} pts "
        f"within the {max_accuracy_drop:g}-point budget"
    ]
    review = []
    if calibration.status == WARN:
        review.append("calibration data warned: " + "; ".join(calibration.reasons))
    if chosen.benchmark is None or baseline is None:
        review.append("not benchmarked")
    else:
        ratio = chosen.benchmark.throughput[GATE_BATCH] / baseline.throughput[GATE_BATCH]
        line = f"{ratio:.2f}x FP32 throughput at batch {GATE_BATCH} on {hardware}"
        (review if ratio < 1.0 else reasons).append(("slower than FP32: " if ratio < 1.0 else "") + line)
    if review:
        return GateDecision(MANUAL_REVIEW, tuple(reasons + review), chosen.index)
    return GateDecision(PASSED, tuple(reasons), chosen.index)
