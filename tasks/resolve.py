"""Resolve and fingerprint the model."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from quantmill.models import Model, resolve_model
from tasks.policy import EPHEMERAL, retried


@task(name="resolve-model", timeout_seconds=1800, **retried(), **EPHEMERAL)
def resolve_model_task(uri: str, task_name: str, workdir: Path) -> Model:
    """Return the fingerprinted, inspected Model for uri as the kind serving task_name makes
    it (retried on registry errors, not bad input)."""
    return resolve_model(uri, task_name, workdir)
