"""Resolve what the user named (an ONNX file, a Hugging Face encoder directory, or an MLflow
model URI) into an ONNX graph to quantize, fingerprinted by the sha256 of its weights."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from quantmill.errors import InputError
from quantmill.hashing import sha256_file, sha256_files

REGISTRY_SCHEME = "models:/"


@dataclass(frozen=True)
class ModelRef:
    """A model ready for the pipeline.

    uri: what the user named; name/version: registry name and version (file stem and None
    outside the registry); onnx_path: the FP32 graph every later stage reads; sha256: the
    fingerprint of the source weights; source_format: "onnx" or "hf-encoder";
    tokenizer_dir: where text inputs are tokenized from, if the model has a tokenizer.
    """

    uri: str
    name: str
    version: str | None
    onnx_path: Path
    sha256: str
    source_format: str
    tokenizer_dir: Path | None


def resolve_model(uri: str, workdir: Path) -> ModelRef:
    """Return a ModelRef for uri, exporting encoder directories to ONNX under workdir.

    Raises InputError naming the file when it is missing, not a model, truncated, or loads
    weights only from a pickle.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if uri.startswith(REGISTRY_SCHEME):
        return _resolve_registry(uri, workdir)
    path = Path(uri)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.is_dir():
        return _resolve_hf_dir(path, uri, path.name, None, workdir)
    return _onnx_ref(path, uri, path.stem, None, workdir)


def check_onnx(path: Path) -> onnx.ModelProto:
    """Return the parsed ONNX model at path after checking that ONNX Runtime can load it.

    Raises InputError when the file is not ONNX, fails the ONNX checker, or is truncated.
    """
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise InputError(path, f"not an ONNX model ({_first_line(err)})") from None
    if not model.graph.node:
        raise InputError(path, "not an ONNX model (no graph nodes; empty or truncated file)")
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as err:
        raise InputError(path, f"invalid ONNX model: {_first_line(err)}") from None
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own unexported exception types
        raise InputError(path, f"ONNX Runtime cannot load it: {_first_line(err)}") from None
    return model


def _onnx_ref(path: Path, uri: str, name: str, version: str | None, workdir: Path) -> ModelRef:
    model = check_onnx(path)
    external = any(
        init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer
    )
    if external:
        # Weights in side files (as MLflow saves ONNX by default): fold them into one file
        # so that every later stage, and the fingerprint, sees the whole model.
        full = onnx.load(str(path))
        digest = hashlib.sha256(full.SerializeToString(deterministic=True)).hexdigest()
        path = workdir / f"{digest[:16]}.onnx"
        if not path.exists():
            onnx.save(full, str(path))
    return ModelRef(uri, name, version, path, sha256_file(path), "onnx", None)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


def _resolve_registry(uri: str, workdir: Path) -> ModelRef:
    # Imported here so that file-based runs never pay for MLflow's import.
    from quantmill.tracking import download_registered_model

    local, name, version = download_registered_model(uri, workdir / "registry")
    mlmodel = read_mlmodel(local)
    flavors = mlmodel.get("flavors", {})
    if "onnx" in flavors:
        return _onnx_ref(local / flavors["onnx"]["data"], uri, name, version, workdir)
    if "transformers" in flavors:
        return _resolve_hf_dir(transformers_weights_dir(local), uri, name, version, workdir)
    raise InputError(uri, f"unsupported MLflow flavor(s) {sorted(flavors)}; expected onnx or transformers")


def read_mlmodel(local: Path) -> dict:
    """Return the parsed MLmodel file of a downloaded registry model. Raises InputError if absent."""
    import yaml

    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        raise InputError(local, "downloaded registry model has no MLmodel file")
    return yaml.safe_load(mlmodel.read_text())


def transformers_weights_dir(local: Path) -> Path:
    """Return the Hugging Face directory inside a downloaded transformers-flavor model, with
    its tokenizer files beside the weights. Raises InputError when the weights were not saved."""
    model_dir = local / "model"
    if not model_dir.is_dir():
        raise InputError(local, "transformers flavor without saved weights (save_pretrained=False)")
    tokenizer = local / "components" / "tokenizer"
    if tokenizer.is_dir():
        for item in tokenizer.iterdir():
            if not (model_dir / item.name).exists():
                shutil.copy2(item, model_dir / item.name)
    return model_dir


def _resolve_hf_dir(path: Path, uri: str, name: str, version: str | None, workdir: Path) -> ModelRef:
    from quantmill.encoder_export import export_encoder

    if not (path / "config.json").is_file():
        raise InputError(path, "not a Hugging Face model directory (no config.json)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickles = [p.name for p in path.glob("*.bin")]
        detail = f" (found {', '.join(pickles)}: pickles are never loaded)" if pickles else ""
        raise InputError(path, f"no safetensors weights{detail}")
    fingerprint = sha256_files(weights, path)
    onnx_path = workdir / f"{fingerprint[:16]}.onnx"
    if not onnx_path.exists():
        export_encoder(path, onnx_path)
    tokenizer = path if (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file() else None
    return ModelRef(uri, name, version, onnx_path, fingerprint, "hf-encoder", tokenizer)
