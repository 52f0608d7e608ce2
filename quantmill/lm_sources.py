"""Resolve a decoder language model: a Hugging Face directory (safetensors, config,
tokenizer) or a transformers-flavor MLflow model URI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from quantmill.errors import InputError
from quantmill.hashing import sha256_files
from quantmill.sources import REGISTRY_SCHEME, read_mlmodel, transformers_weights_dir


@dataclass(frozen=True)
class LanguageModelRef:
    """A causal LM ready for the pipeline: what the user named, registry name and version,
    the Hugging Face directory, the sha256 of its weights, parameter count and size."""

    uri: str
    name: str
    version: str | None
    model_dir: Path
    sha256: str
    parameters: int
    size_bytes: int


def resolve_language_model(uri: str, workdir: Path) -> LanguageModelRef:
    """Return the LanguageModelRef for uri.

    Raises InputError when the directory is missing, is not a causal LM, has no
    safetensors weights (pickles are never loaded) or no tokenizer.
    """
    name, version = None, None
    if uri.startswith(REGISTRY_SCHEME):
        from quantmill.tracking import download_registered_model

        local, name, version = download_registered_model(uri, workdir / "registry")
        if "transformers" not in read_mlmodel(local).get("flavors", {}):
            raise InputError(uri, "a language model must be registered with the transformers flavor")
        path = transformers_weights_dir(local)
    else:
        path = Path(uri)
    if not path.is_dir():
        raise InputError(path, "no such directory (a language model is a Hugging Face directory)")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise InputError(path, "not a Hugging Face model directory (no config.json)")
    architectures = json.loads(config_path.read_text()).get("architectures") or []
    if not any(a.endswith("ForCausalLM") for a in architectures):
        raise InputError(config_path, f"not a causal language model (architectures: {architectures or 'none'})")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise InputError(path, "no safetensors weights (pickles are never loaded)")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise InputError(path, "no tokenizer (tokenizer.json or tokenizer.model)")
    return LanguageModelRef(
        uri, name or path.name, version, path, sha256_files(weights, path),
        _parameters(weights), sum(w.stat().st_size for w in weights),
    )


def _parameters(weights: list[Path]) -> int:
    from safetensors import safe_open

    total = 0
    for file in weights:
        with safe_open(str(file), framework="numpy") as handle:
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total
