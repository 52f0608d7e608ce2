"""Hugging Face encoders (sentence embedders): a directory with config.json, safetensors
weights and a tokenizer, or a transformers-flavor MLflow model; exported with its pooling
to an ONNX graph, which the ONNX formats quantize."""

from __future__ import annotations

from pathlib import Path

from quantmill.data import check_regular_file, read_config
from quantmill.errors import InputError
from quantmill.hashing import sha256_files
from quantmill.models.base import Model
from quantmill.models.onnx import OnnxKind, onnx_model
from quantmill.tracking.registry import transformers_weights_dir


def safetensors_weights(path: Path) -> list[Path]:
    """Return the safetensors files of a Hugging Face directory. Raises InputError naming
    the folder when it has none (and, when it has pickles, that they are never loaded), or
    naming a weights file that is not a regular file (a FIFO would hang the hash)."""
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickles = [p.name for p in path.glob("*.bin")]
        detail = f" (found {', '.join(pickles)}: pickles are never loaded)" if pickles else ""
        raise InputError(path, f"no safetensors weights{detail}")
    for weight in weights:
        check_regular_file(weight)
    return weights


class HfEncoderKind(OnnxKind):
    """A Hugging Face encoder, quantized as its exported ONNX graph."""

    name = "hf-encoder"
    tasks = ("embedding", "classification")
    flavor = "transformers"

    def recognizes(self, path: Path) -> bool:
        """Return whether path is a folder (a Hugging Face directory)."""
        return path.is_dir()

    def resolve(self, path: Path, uri: str, name: str, version: str | None, workdir: Path) -> Model:
        """Return the Model of the encoder directory at path, exported to ONNX under workdir
        once per weights. Raises InputError for a folder that is not a safetensors encoder."""
        from quantmill.models.encoder_export import export_encoder, export_key

        if not (path / "config.json").is_file():
            raise InputError(path, "not a Hugging Face model directory (no config.json)")
        fingerprint = sha256_files(safetensors_weights(path), path)
        graph = workdir / f"{export_key(path, fingerprint)[:16]}.onnx"
        if not graph.exists():
            export_encoder(path, graph)
        tokenizer = path if (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file() else None
        architectures = read_config(path / "config.json").get("architectures") or [""]
        return onnx_model(graph, uri, name, version, self.name, fingerprint, tokenizer, str(architectures[0]),
                          "the checkpoint exported to ONNX in FP32, on ONNX Runtime")

    def from_registry(self, local: Path, flavors: dict, uri: str, name: str, version: str, workdir: Path) -> Model:
        """Return the Model of a downloaded transformers-flavor encoder."""
        return self.resolve(transformers_weights_dir(local), uri, name, version, workdir)

    def log_source(self, path: Path, name: str):
        """Log the encoder with MLflow's transformers flavor and its tokenizer, registered as name."""
        from transformers import AutoModel

        from quantmill.models.hf_causal_lm import log_transformers

        return log_transformers(path, name, AutoModel, "feature-extraction")
