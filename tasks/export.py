"""Publish an attempt's artifact with its metadata, atomically."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from quantmill.exporters.artifact import ExportedArtifact, export_artifact
from tasks.policy import EPHEMERAL, retried


@task(name="export", **retried(), **EPHEMERAL)
def export_task(model: Path, destination: Path, metadata: dict) -> ExportedArtifact:
    """Return the published artifact (retried on I/O errors)."""
    return export_artifact(model, destination, metadata)
