"""Publish an attempt's artifact with its metadata, atomically."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from quantmill.exporters.artifact import ExportedArtifact, export_artifact
from tasks.policy import EPHEMERAL, transient


@task(name="export", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=transient, **EPHEMERAL)
def export_task(model: Path, destination: Path, metadata: dict) -> ExportedArtifact:
    """Return the published artifact (retried on I/O errors)."""
    return export_artifact(model, destination, metadata)
