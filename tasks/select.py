"""Select candidate formats from the measured benchmark table."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from quantmill.benchmark_table import load_table
from quantmill.formats import Candidate, select_formats
from quantmill.hardware import Hardware, local_cpu
from tasks.policy import EPHEMERAL


@task(name="select-formats", **EPHEMERAL)
def select_formats_task(family: str, target: str, max_accuracy_drop: float, table_dir: Path) -> tuple[Candidate, ...]:
    """Return the ordered candidates for family on target, read from table_dir's CSVs."""
    return select_formats(family, target, max_accuracy_drop, load_table(table_dir))


@task(name="describe-hardware", **EPHEMERAL)
def hardware_task() -> Hardware:
    """Return the hardware this worker benchmarks on."""
    return local_cpu()
