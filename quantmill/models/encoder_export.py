"""Export a Hugging Face encoder directory to an ONNX graph that returns sentence embeddings.

Pooling is part of the graph so that FP32 and quantized models are compared on the vector a
user deploys, not on hidden states.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from quantmill.atomic import atomic_file
from quantmill.errors import InputError
from quantmill.hashing import fingerprint, sha256_file

OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class _Pooled(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module, mode: str, normalize: bool) -> None:
        super().__init__()
        self.encoder, self.mode, self.normalize = encoder, mode, normalize

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        if self.mode == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


# sentence-transformers' Pooling config keys, by the mode each turns on.
_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


def read_pooling(path: Path) -> tuple[str, bool]:
    """Return (pooling mode, normalize) from a sentence-transformers layout in path.

    Directories without one get mean pooling without normalization. Raises InputError for
    a pooling mode other than mean or cls.
    """
    mode, normalize = "mean", False
    modules = path / "modules.json"
    if modules.is_file():
        entries = json.loads(modules.read_text())
        normalize = any(e.get("type", "").endswith("Normalize") for e in entries)
        for entry in entries:
            if entry.get("type", "").endswith("Pooling"):
                config = json.loads((path / entry["path"] / "config.json").read_text())
                modes = [k for k, v in config.items() if k.startswith("pooling_mode_") and v]
                mode = _POOLING.get(modes[0], modes[0]) if modes else "mean"
    if mode not in _POOLING.values():
        raise InputError(path, f"pooling mode {mode!r} is not supported (mean or cls)")
    return mode, normalize


def export_key(model_dir: Path, weights_sha256: str) -> str:
    """Return the sha256 naming an export of model_dir: its weights, its pooling, and how it
    is exported (this module's code, the opset, torch's version), so that a cached graph is
    made again when any of them changes. Raises InputError as read_pooling does."""
    from importlib.metadata import version

    return fingerprint((weights_sha256, read_pooling(model_dir), OPSET, version("torch"), sha256_file(Path(__file__))))


def export_encoder(model_dir: Path, onnx_path: Path) -> Path:
    """Write model_dir's encoder with its pooling as ONNX to onnx_path (atomically); return it.

    Raises InputError when transformers cannot load the directory from safetensors.
    """
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as transformers_logging

    # Loading and tracing print progress bars and tracer warnings that say nothing to a user.
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
        encoder = AutoModel.from_pretrained(
            model_dir, config=config, use_safetensors=True, trust_remote_code=False,
            attn_implementation="eager",
        )
    except (OSError, ValueError, KeyError) as err:
        raise InputError(model_dir, f"transformers cannot load it: {str(err).splitlines()[0]}") from None
    mode, normalize = read_pooling(model_dir)
    wrapped = _Pooled(encoder, mode, normalize).eval()
    example = (torch.ones(2, 8, dtype=torch.long),) * 2 + (torch.zeros(2, 8, dtype=torch.long),)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    with atomic_file(onnx_path) as tmp:
        # The TorchScript exporter gives the plain MatMul/Add graph that ONNX Runtime's
        # quantizer and transformer fusions are written for.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped, example, str(tmp), dynamo=False, opset_version=OPSET,
                input_names=list(INPUT_NAMES), output_names=["sentence_embedding"],
                dynamic_axes=axes | {"sentence_embedding": {0: "batch"}},
            )
    return onnx_path
