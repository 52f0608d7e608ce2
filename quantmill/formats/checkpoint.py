"""The Hugging Face checkpoint as it came, run by transformers: the full-precision baseline
that formats on transformers (AWQ) are measured against, on the same runtime."""

from __future__ import annotations

from pathlib import Path

from quantmill.data import Dataset
from quantmill.formats.base import Format
from quantmill.models.base import Model


class HfCheckpoint(Format):
    """The safetensors checkpoint in the precision it was saved in."""

    name = "hf-checkpoint"
    description = "the Hugging Face checkpoint as saved (the baseline on transformers)"
    kinds = ("hf-causal-lm",)
    runtime = "transformers"
    candidate = False

    def output_path(self, model: Model, options: object, calibration: Dataset | None, workdir: Path) -> Path:
        """Return the model's own directory."""
        return model.path

    def quantize(self, model: Model, options: object, calibration: Dataset | None, workdir: Path) -> Path:
        """Return the model's own directory."""
        return model.path


FORMATS = (HfCheckpoint(),)
