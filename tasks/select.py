"""Select candidate formats from the measured benchmark table."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from quantmill.benchmark_table import load_table
from quantmill.formats import Candidate, select_formats
from tasks.policy import EPHEMERAL


@task(name="select-formats", **EPHEMERAL)
def select_formats_task(family: str, target: str, max_accuracy_drop: float, table_dir: Path) -> tuple[Candidate, ...]:
    """Return the ordered candidates for family on target, read from table_dir's CSVs."""
    return select_formats(family, target, max_accuracy_drop, load_table(table_dir))

