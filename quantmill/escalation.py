"""The escalation ladder: what to try next when a quantized model misses its budget.

For a calibrated format: the first calibration method, then the others; then a layerwise
sensitivity scan and the most sensitive groups kept in float. Other formats get one try.
Then the next candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from quantmill.formats import FORMATS
from quantmill.quantizers.onnx_runtime import CALIBRATION_METHODS, QuantizeOptions
from quantmill.sensitivity import GroupScore


@dataclass(frozen=True)
class Step:
    """One attempt to make: its options and why it is being made."""

    options: QuantizeOptions
    reason: str


def calibration_steps(format_name: str, candidate_reason: str, reduce_range: bool) -> tuple[Step, ...]:
    """Return the first attempts for a candidate format: every calibration method in turn
    for a calibrated format, a single attempt otherwise."""
    if not FORMATS[format_name].calibrated:
        return (Step(QuantizeOptions(format_name, reduce_range=reduce_range), f"candidate: {candidate_reason}"),)
    methods = tuple(CALIBRATION_METHODS)
    steps = [Step(QuantizeOptions(format_name, methods[0], reduce_range=reduce_range), f"candidate: {candidate_reason}")]
    steps += [
        Step(QuantizeOptions(format_name, method, reduce_range=reduce_range), f"missed the budget; trying {method} calibration")
        for method in methods[1:]
    ]
    return tuple(steps)


def exclusion_steps(best: QuantizeOptions, exclusions: tuple[tuple[GroupScore, ...], ...]) -> tuple[Step, ...]:
    """Return attempts that keep growing sets of the most sensitive groups in float, using
    the best options found so far."""
    return tuple(
        Step(
            replace(best, nodes_to_exclude=tuple(node for group in groups for node in group.nodes)),
            f"missed the budget; keeping the {len(groups)} most sensitive group(s) in float: "
            + ", ".join(f"{g.group} ({g.accuracy_drop:.2f} pts alone)" for g in groups),
        )
        for groups in exclusions
    )


def scans_sensitivity(format_name: str) -> bool:
    """Return whether a miss in this format escalates to a sensitivity scan."""
    return FORMATS[format_name].calibrated
