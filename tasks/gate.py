"""Decide whether the result may ship."""

from __future__ import annotations

from prefect import task

from quantmill.attempts import Attempt
from quantmill.benchmark import Benchmark
from quantmill.calibration import CalibrationVerdict
from quantmill.gate import GateDecision, decide
from tasks.policy import EPHEMERAL


@task(name="gate", **EPHEMERAL)
def gate_task(
    calibration: CalibrationVerdict, attempts: tuple[Attempt, ...], baseline: Benchmark | None,
    max_accuracy_drop: float, hardware: str,
) -> GateDecision:
    """Return passed / failed / manual_review with reasons."""
    return decide(calibration, attempts, baseline, max_accuracy_drop, hardware)
