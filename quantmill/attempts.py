"""One attempt at a quantized model, with everything measured about it."""

from __future__ import annotations

from dataclasses import dataclass

from quantmill.exporters.artifact import ExportedArtifact
from quantmill.metrics import Evaluation


@dataclass(frozen=True)
class Attempt:
    """Attempt number index: its format, how it was made and why, the published artifact,
    its evaluation against full precision, its benchmark (a runtime's measurement; None
    when not measured), and the full-precision baseline on the same runtime: its format and
    its measurement from the same run."""

    index: int
    format: str
    options: object
    reason: str
    artifact: ExportedArtifact
    evaluation: Evaluation
    benchmark: object | None
    baseline_format: str | None = None
    baseline: object | None = None
