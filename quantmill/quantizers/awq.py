"""AWQ W4A16 (4-bit weights, group size 128, asymmetric) with vLLM's llm-compressor.

AutoAWQ is archived and pins an older torch, so the maintained implementation that installs
beside our torch is llm-compressor's AWQModifier; its checkpoint (compressed-tensors,
pack-quantized) loads back in transformers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# lm_head stays in full precision, as AWQ recipes leave it.
RECIPE_IGNORE = ["lm_head"]
SCHEME = "W4A16_ASYM"


def quantize_awq(model_dir: Path, out_dir: Path, calibration: np.ndarray) -> Path:
    """Write the AWQ W4A16 checkpoint of model_dir, calibrated on the token windows in
    calibration, to out_dir (whole, via a staging folder); return out_dir.

    llm-compressor's and transformers' errors pass through.
    """
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.awq import AWQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [{"input_ids": row.tolist(), "attention_mask": [1] * len(row)} for row in calibration]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True, trust_remote_code=False)
    with _without_pinning():
        oneshot(
            model=model, dataset=Dataset.from_list(rows),
            recipe=[AWQModifier(ignore=RECIPE_IGNORE, scheme=SCHEME, targets=["Linear"])],
            max_seq_length=calibration.shape[1], num_calibration_samples=len(rows),
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, save_compressed=True)
        AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False).save_pretrained(staging)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


@contextlib.contextmanager
def _without_pinning() -> Iterator[None]:
    # llm-compressor 0.14's AWQ pins its cached activations unconditionally to speed up
    # host-to-device copies; pinning needs an accelerator and raises on a CPU-only machine.
    # It is only an optimization, so it is skipped where there is nothing to copy to.
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original
