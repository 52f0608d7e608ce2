"""One attempt at a quantized model, with everything measured about it."""

from __future__ import annotations

from dataclasses import dataclass

from quantmill.benchmark import Benchmark
from quantmill.evaluation import Evaluation
from quantmill.exporters.artifact import ExportedArtifact
from quantmill.lm_benchmark import LMBenchmark
from quantmill.quantizers.onnx_runtime import QuantizeOptions


@dataclass(frozen=True)
class Attempt:
    """Attempt number index: how it was made and why, the published artifact, its
    evaluation against FP32, and its benchmark (None when not measured)."""

    index: int
    options: QuantizeOptions
    reason: str
    artifact: ExportedArtifact
    evaluation: Evaluation
    benchmark: Benchmark | LMBenchmark | None

    @property
    def format(self) -> str:
        """Return the attempt's format name."""
        return self.options.format
