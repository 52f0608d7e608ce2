"""Publish an attempt's artifact with its metadata, atomically."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from quantmill.exporters.artifact import ExportedArtifact, export_artifact
from quantmill.formats import Format
from tasks.policy import EPHEMERAL, retried


@task(name="export", timeout_seconds=900, **retried(), **EPHEMERAL)
def export_task(fmt: Format, model: Path, destination: Path, metadata: dict) -> ExportedArtifact:
    """Return the published artifact: the files its format says make it up (retried on I/O errors)."""
    return export_artifact(model, fmt.artifact_files(model), destination, metadata)
