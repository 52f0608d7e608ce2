"""Decide whether the result may ship."""

from __future__ import annotations

from prefect import task

from quantmill.attempts import Attempt
from quantmill.calibration import CalibrationVerdict
from quantmill.gate import GateDecision, decide
from quantmill.goal import Goal
from quantmill.metrics import Budget
from tasks.policy import EPHEMERAL


@task(name="gate", timeout_seconds=60, **EPHEMERAL)
def gate_task(
    calibration: CalibrationVerdict, attempts: tuple[Attempt, ...], budget: Budget, hardware: str, objective: str,
    chosen_index: int | None = None, goal: Goal | None = None, parameters: int = 0,
) -> GateDecision:
    """Return passed / failed / manual_review with reasons, judging speed by objective, on
    the attempt chosen_index (a search's choice) or else the first within budget, and the
    goal where one is set."""
    return decide(calibration, attempts, budget, hardware, objective, chosen_index, goal, parameters)
