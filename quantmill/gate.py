"""The gate: may this result ship? passed, failed or manual_review, with reasons."""

from __future__ import annotations

from dataclasses import dataclass

from quantmill.attempts import Attempt
from quantmill.calibration import FAIL, WARN, CalibrationVerdict
from quantmill.metrics import Budget
from quantmill.speed import FASTER, MARGIN, SLOWER, compare

PASSED, FAILED, MANUAL_REVIEW = "passed", "failed", "manual_review"


@dataclass(frozen=True)
class GateDecision:
    """The status, the reasons for it, and the index of the attempt that would ship."""

    status: str
    reasons: tuple[str, ...]
    chosen_attempt: int | None


def chosen_attempt(attempts: tuple[Attempt, ...] | list[Attempt], budget: Budget) -> Attempt | None:
    """Return the attempt that would ship: the first within budget, or None."""
    return next((a for a in attempts if a.evaluation.accuracy_drop <= budget.value), None)


def decide(
    calibration: CalibrationVerdict, attempts: tuple[Attempt, ...], budget: Budget, hardware: str,
) -> GateDecision:
    """Return the gate decision.

    Speed is compared with each attempt's own baseline, full precision on the same runtime
    measured in the same run; the budget is in its own unit.

    failed: the calibration data failed validation, or no attempt met the accuracy budget.
    manual_review: the best attempt met the budget but the calibration data only warned,
    or it was not measured faster than the full-precision baseline on this hardware beyond
    the noise (speed.compare on the runtime's headline figure, round by round: throughput
    at batch 32, or decode tokens/s): slower, or no measurable speedup.
    passed: otherwise, naming the first attempt within budget.
    """
    if calibration.status == FAIL:
        return GateDecision(FAILED, ("calibration data failed validation: " + "; ".join(calibration.reasons),), None)
    chosen = chosen_attempt(attempts, budget)
    if chosen is None:
        best = min(attempts, key=lambda o: o.evaluation.accuracy_drop, default=None)
        detail = f"; best was {best.format} at {best.evaluation.accuracy_drop:.2f} {budget.unit}" if best else ""
        return GateDecision(FAILED, (f"no attempt met the budget of {budget.describe()}{detail}",), None)
    reasons = [
        f"{chosen.format}: {chosen.evaluation.metric_name} drop {chosen.evaluation.accuracy_drop:.2f} {budget.unit} "
        f"within the budget of {budget.describe()}"
    ]
    review = []
    if calibration.status == WARN:
        review.append("calibration data warned: " + "; ".join(calibration.reasons))
    if chosen.benchmark is None or chosen.baseline is None:
        review.append("not benchmarked")
    else:
        speed = compare(chosen.benchmark.headline_rounds(), chosen.baseline.headline_rounds())
        line = (f"{speed.describe()} the full-precision baseline's {chosen.benchmark.headline()[1]} "
                f"({chosen.baseline_format}, same runtime) on {hardware}")
        if speed.verdict == FASTER:
            reasons.append("faster: " + line)
        elif speed.verdict == SLOWER:
            review.append("slower than full precision: " + line)
        else:
            review.append(f"no measurable speedup (the interval does not clear {1 + MARGIN:.2f}x): " + line)
    if review:
        return GateDecision(MANUAL_REVIEW, tuple(reasons + review), chosen.index)
    return GateDecision(PASSED, tuple(reasons), chosen.index)
