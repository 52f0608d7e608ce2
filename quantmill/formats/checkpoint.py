"""The Hugging Face checkpoint as it came, run by transformers: the full-precision baseline
that formats on transformers (AWQ) are measured against, on the same runtime."""

from __future__ import annotations

from quantmill.formats.base import AsGiven


class HfCheckpoint(AsGiven):
    """The safetensors checkpoint in the precision it was saved in."""

    name = "hf-checkpoint"
    description = "the Hugging Face checkpoint as saved (the baseline on transformers)"
    kinds = ("hf-causal-lm",)
    runtime = "transformers"


FORMATS = (HfCheckpoint(),)
