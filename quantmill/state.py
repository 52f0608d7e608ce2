"""Where quantmill keeps its state on this machine: $QUANTMILL_HOME and the output folders
relative to it."""

from __future__ import annotations

import os
from pathlib import Path


def quantmill_home() -> Path:
    """Return the project-local state folder: $QUANTMILL_HOME, else ./.quantmill."""
    return Path(os.environ.get("QUANTMILL_HOME", ".quantmill")).resolve()


def run_dir(out: Path, run_key: str) -> Path:
    """Return the folder one run writes its attempts and report into under out: runs of the
    same model version (a tag changed mid-run, a re-run) never share files."""
    return out / "runs" / run_key


def output_dir(path: str) -> Path:
    """Return path if absolute, else path under quantmill_home(): a deployment's relative
    out_dir lands in the worker's state folder, not wherever its process started."""
    return Path(path) if Path(path).is_absolute() else quantmill_home() / path
