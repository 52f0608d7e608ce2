"""The gate: may this result ship? passed, failed or manual_review, with reasons."""

from __future__ import annotations

from dataclasses import dataclass

from quantmill.attempts import Attempt
from quantmill.calibration import FAIL, WARN, CalibrationVerdict
from quantmill.goal import Goal
from quantmill.metrics import Budget
from quantmill.speed import FASTER, MARGIN, SIZE, SLOWER, THROUGHPUT, compare

PASSED, FAILED, MANUAL_REVIEW = "passed", "failed", "manual_review"


@dataclass(frozen=True)
class GateDecision:
    """The status, the reasons for it, and the index of the attempt that would ship."""

    status: str
    reasons: tuple[str, ...]
    chosen_attempt: int | None


def chosen_attempt(attempts: tuple[Attempt, ...] | list[Attempt], budget: Budget) -> Attempt | None:
    """Return the attempt that would ship: the first within budget, or None."""
    return next((a for a in attempts if budget.meets(a.evaluation)), None)


@dataclass(frozen=True)
class SearchChoice:
    """What a search chose among the attempts within budget, and why: each one's figure on
    the objective (paired speed ratio against its own baseline, or size in MB), best first;
    with a goal, each one's figure on the goal's scale, the chosen first, and whether any
    reached it."""

    index: int
    objective: str
    ranking: tuple[tuple[int, str, float], ...]
    why: str
    goal: str | None = None
    goal_met: bool = True


def best_for_objective(attempts: tuple[Attempt, ...] | list[Attempt], budget: Budget, objective: str,
                       goal: Goal | None = None, parameters: int = 0) -> SearchChoice | None:
    """Return the attempt within budget that best serves objective, measured: the highest
    paired speed ratio on the objective's figure against its own full-precision baseline
    (throughput, latency), or the smallest artifact not slower beyond the noise (size; the
    smallest of all when every one is slower). With a goal (parameters: the model's, for
    bits per weight), the lowest drop among those that reach it, or, when none does, the
    closest to it (goal_met False). None when no benchmarked attempt is within budget."""
    within = [a for a in attempts if budget.meets(a.evaluation) and a.benchmark is not None and a.baseline is not None]
    if not within:
        return None
    if goal is not None:
        return _best_for_goal(within, budget, objective, goal, parameters)
    if objective == SIZE:
        ranked = sorted(within, key=lambda a: a.artifact.size_bytes)
        speeds = {a.index: compare(a.benchmark.speed_rounds(THROUGHPUT)[0], a.baseline.speed_rounds(THROUGHPUT)[0]) for a in ranked}
        best = next((a for a in ranked if speeds[a.index].verdict != SLOWER), ranked[0])
        ranking = tuple((a.index, a.format, a.artifact.size_bytes / 1e6) for a in ranked)
        why = (f"the smallest of {len(ranked)} attempts within budget that is not slower than full precision: "
               + ", ".join(f"#{i} {f} {mb:.2f} MB" for i, f, mb in ranking))
        return SearchChoice(best.index, objective, ranking, why)
    ratios = {a.index: compare(a.benchmark.speed_rounds(objective)[0], a.baseline.speed_rounds(objective)[0]) for a in within}
    ranked = sorted(within, key=lambda a: -ratios[a.index].ratio)
    ranking = tuple((a.index, a.format, ratios[a.index].ratio) for a in ranked)
    figure = ranked[0].benchmark.speed_rounds(objective)[1]
    why = (f"the fastest of {len(ranked)} attempts within budget on {figure} against its own baseline: "
           + ", ".join(f"#{i} {f} {r:.2f}x" for i, f, r in ranking))
    return SearchChoice(ranked[0].index, objective, ranking, why)


def _best_for_goal(within: list[Attempt], budget: Budget, objective: str, goal: Goal, parameters: int) -> SearchChoice:
    figures = {a.index: goal.figure(a, parameters) for a in within}
    reaching = [a for a in within if goal.met(figures[a.index])]
    if reaching:
        ranked = sorted(reaching, key=lambda a: (a.evaluation.accuracy_drop, figures[a.index]))
        why = (f"the lowest drop of {len(reaching)} attempts within budget that reach the goal of {goal.describe()}: "
               + ", ".join(f"#{a.index} {a.format} {a.evaluation.accuracy_drop:.3f} {budget.unit} at "
                           f"{goal.format(figures[a.index])}" for a in ranked))
        short = [a for a in within if a not in reaching]
        if short:
            why += "; short of the goal: " + ", ".join(f"#{a.index} {a.format} {goal.format(figures[a.index])}" for a in short)
    else:
        ranked = sorted(within, key=lambda a: (figures[a.index] is None, figures[a.index] or 0.0))
        why = (f"none of {len(within)} attempts within budget reaches the goal of {goal.describe()}; the closest: "
               + ", ".join(f"#{a.index} {a.format} {goal.format(figures[a.index])}" for a in ranked))
    ranking = tuple((a.index, a.format, figures[a.index]) for a in ranked)
    return SearchChoice(ranked[0].index, objective, ranking, why, goal.describe(), bool(reaching))


def decide(
    calibration: CalibrationVerdict, attempts: tuple[Attempt, ...], budget: Budget, hardware: str,
    objective: str = THROUGHPUT, chosen_index: int | None = None, goal: Goal | None = None, parameters: int = 0,
) -> GateDecision:
    """Return the gate decision.

    Speed is compared with each attempt's own baseline, full precision on the same runtime
    measured in the same run; the budget is in its own unit.

    failed: the calibration data failed validation, or no attempt met the accuracy budget.
    The attempt is chosen on the evaluation's choosing half (the first within budget there);
    its drop is then judged as measured on the confirming half, which chose nothing.

    failed: the calibration data failed validation, no attempt met the accuracy budget on
    the choosing half, or the chosen one's confirmed drop (or mean KLD, where the budget
    sets max_kld) is over the budget.
    manual_review: the confirmed drop (or mean KLD) is within budget but the upper end of
    its 95% bootstrap interval is not (within budget, not beyond the noise), the calibration data
    only warned, or the attempt was not measured faster than the full-precision baseline on
    this hardware beyond the noise (speed.compare on the runtime's headline figure, round by
    round: throughput at batch 32, or decode tokens/s): slower, or no measurable speedup.
    passed: otherwise, naming the attempt.

    objective (speed.OBJECTIVES) says which figure is judged: throughput at the serving
    batch, latency at batch 1, or, for size, that the artifact is smaller than the baseline
    and not slower (throughput) beyond the noise: then slower, or not smaller, is review.

    chosen_index names the attempt to judge when a search chose it (best_for_objective);
    otherwise the first within budget is judged. With a goal (parameters: the model's), the
    chosen attempt as measured here must reach it, or it is manual_review.
    """
    if calibration.status == FAIL:
        return GateDecision(FAILED, ("calibration data failed validation: " + "; ".join(calibration.reasons),), None)
    chosen = (chosen_attempt(attempts, budget) if chosen_index is None
              else next(a for a in attempts if a.index == chosen_index))
    if chosen is None:
        best = min(attempts, key=lambda o: o.evaluation.accuracy_drop, default=None)
        detail = f"; best was {best.format} at {best.evaluation.accuracy_drop:.2f} {budget.unit}" if best else ""
        return GateDecision(FAILED, (f"no attempt met the budget of {budget.describe()}{detail}",), None)
    ev = chosen.evaluation
    confirmed = ev.confirmed or ev
    low, high = confirmed.interval or (confirmed.accuracy_drop, confirmed.accuracy_drop)
    drop = (f"{chosen.format}: {ev.metric_name} drop {ev.accuracy_drop:.2f} {budget.unit} on the {ev.samples} samples "
            f"that chose it, confirmed at {confirmed.accuracy_drop:.2f} (95% CI {low:.2f} to {high:.2f}) "
            f"on {confirmed.samples} held back")
    if budget.max_kld is not None:
        kld = confirmed.secondary
        drop += (f"; mean KLD {ev.secondary['mean_kl']:.5f} on the choosing half, confirmed at {kld['mean_kl']:.5f} "
                 f"(95% CI {kld['mean_kl_ci_low']:.5f} to {kld['mean_kl_ci_high']:.5f})")
    if not budget.meets(confirmed):
        return GateDecision(FAILED, (f"{drop}: over the budget of {budget.describe()}",), None)
    reasons = [f"{drop}, within the budget of {budget.describe()}"]
    review = []
    if high > budget.value:
        review.append(f"the confirmed drop's interval reaches {high:.2f} {budget.unit}, over the budget: "
                      "within budget, but not beyond the noise")
    if budget.max_kld is not None and confirmed.secondary["mean_kl_ci_high"] > budget.max_kld:
        review.append(f"the confirmed mean KLD's interval reaches {confirmed.secondary['mean_kl_ci_high']:.5f}, over "
                      f"the budget of {budget.max_kld:g}: within budget, but not beyond the noise")
    if calibration.status == WARN:
        review.append("calibration data warned: " + "; ".join(calibration.reasons))
    if goal is not None:
        figure = goal.figure(chosen, parameters)
        (reasons if goal.met(figure) else review).append(
            f"goal {goal.describe()}: {'reached' if goal.met(figure) else 'not reached'}, at {goal.format(figure)}")
    if chosen.benchmark is None or chosen.baseline is None:
        review.append("not benchmarked")
    else:
        judged = THROUGHPUT if objective == SIZE else objective
        (rounds, figure), (base_rounds, _) = chosen.benchmark.speed_rounds(judged), chosen.baseline.speed_rounds(judged)
        speed = compare(rounds, base_rounds)
        line = f"{speed.describe()} the full-precision baseline's {figure} ({chosen.baseline_format}, same runtime) on {hardware}"
        smaller = chosen.baseline.size_bytes / chosen.artifact.size_bytes
        size_line = (f"{smaller:.2f}x smaller than the full-precision baseline "
                     f"({chosen.artifact.size_bytes / 1e6:.2f} MB against {chosen.baseline.size_bytes / 1e6:.2f} MB)")
        if objective == SIZE:
            if smaller <= 1.0:
                review.append("size objective, but not smaller: " + size_line)
            elif speed.verdict == SLOWER:
                review.append(f"size objective: {size_line}, but slower than full precision: {line}")
            else:
                reasons.append(f"size objective: {size_line}, and not slower: {line}")
        elif speed.verdict == FASTER:
            reasons.append("faster: " + line)
        elif speed.verdict == SLOWER:
            review.append("slower than full precision: " + line)
        else:
            review.append(f"no measurable speedup (the interval does not clear {1 + MARGIN:.2f}x): " + line)
    if review:
        return GateDecision(MANUAL_REVIEW, tuple(reasons + review), chosen.index)
    return GateDecision(PASSED, tuple(reasons), chosen.index)
