"""Select candidate formats from the measured benchmark table."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from quantmill.benchmark_table import load_table
from quantmill.formats import Candidate, select_formats
from quantmill.hardware import HardwareUnavailable, local_hardware
from quantmill.metrics import Budget
from quantmill.models import Model
from quantmill.targets import Target
from tasks.policy import EPHEMERAL


@task(name="select-formats", timeout_seconds=60, **EPHEMERAL)
def select_formats_task(model: Model, target: Target, budget: Budget, table_dir: Path) -> tuple[Candidate, ...]:
    """Return the ordered candidates for model on target, read from table_dir's CSVs,
    preferring rows measured on this machine's hardware for target (when this machine has it)."""
    try:
        machine = local_hardware(target, "").identity()
    except HardwareUnavailable:
        machine = None
    return select_formats(model.kind, model.family, target, budget.value, budget.unit, load_table(table_dir), machine)
