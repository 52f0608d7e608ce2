"""Resolve and fingerprint the model, and inspect it."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from quantmill.inspection import ModelProfile, inspect_model
from quantmill.sources import ModelRef, resolve_model
from tasks.policy import EPHEMERAL, retried


@task(name="resolve-model", **retried(), **EPHEMERAL)
def resolve_model_task(uri: str, workdir: Path) -> ModelRef:
    """Return the fingerprinted ModelRef for uri (retried on registry errors, not bad input)."""
    return resolve_model(uri, workdir)


@task(name="inspect-model", **EPHEMERAL)
def inspect_task(model: ModelRef) -> ModelProfile:
    """Return the ModelProfile of the model's ONNX graph."""
    return inspect_model(model.onnx_path)
