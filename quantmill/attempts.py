"""One attempt at a quantized model, with everything measured about it."""

from __future__ import annotations

from dataclasses import dataclass

from quantmill.exporters.artifact import ExportedArtifact
from quantmill.metrics import Evaluation


@dataclass(frozen=True)
class Attempt:
    """Attempt number index: its format, how it was made and why, the published artifact,
    its evaluation against full precision, and its benchmark (a runtime's measurement;
    None when not measured)."""

    index: int
    format: str
    options: object
    reason: str
    artifact: ExportedArtifact
    evaluation: Evaluation
    benchmark: object | None
