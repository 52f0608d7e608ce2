"""Model kinds: ONNX graphs, Hugging Face encoders, Hugging Face causal LMs. Each resolves,
fingerprints and inspects its models, loads their data and says which task metrics apply;
`resolve_model` finds the kind for what the user named and the task asked for."""

from __future__ import annotations

import threading
from pathlib import Path

from quantmill.data import Dataset, check_regular_file
from quantmill.errors import InputError, QuantmillError
from quantmill.hashing import sha256_file, sha256_files
from quantmill.models.base import Model, ModelKind
from quantmill.models.hf_causal_lm import HfCausalLmKind
from quantmill.models.hf_encoder import HfEncoderKind
from quantmill.models.onnx import OnnxKind
from quantmill.tracking.registry import REGISTRY_SCHEME

# Most specific first: a causal LM directory is also a Hugging Face directory.
KINDS: dict[str, ModelKind] = {k.name: k for k in (HfCausalLmKind(), HfEncoderKind(), OnnxKind())}

__all__ = ["KINDS", "Model", "ModelKind", "get_kind", "prepare_data", "register_source_model", "resolve_model"]


def get_kind(name: str) -> ModelKind:
    """Return the model kind called name. Raises QuantmillError for an unknown one."""
    if name not in KINDS:
        raise QuantmillError(f"unknown model kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]


# Data sets prepared in this process, by model, file (and its size and modification time)
# and task: the command line's checks and the flow that follows share one preparation.
_PREPARED: dict[tuple, Dataset] = {}
_PREPARED_LIMIT = 4
_PREPARED_LOCK = threading.Lock()


def prepare_data(model: Model, path: Path, task_name: str | None = None) -> Dataset:
    """Return the data set at path ready to feed model (its kind's loader), checked to be
    scorable by task_name's metric when given; prepared once per process for the same model
    and unchanged file. Raises InputError naming the file."""
    from quantmill.metrics import get_metric

    stat = path.stat() if path.is_file() else None
    key = (model.sha256, model.kind, str(path.resolve()), stat and (stat.st_size, stat.st_mtime_ns), task_name)
    with _PREPARED_LOCK:
        if stat is not None and key in _PREPARED:
            return _PREPARED[key]
    kind = get_kind(model.kind)
    dataset = kind.load_data(model, path)
    if task_name is not None:
        get_metric(task_name).check(dataset, kind.classes(model))
    with _PREPARED_LOCK:
        while len(_PREPARED) >= _PREPARED_LIMIT:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = dataset
    return dataset


def resolve_model(uri: str, task: str, workdir: Path) -> Model:
    """Return the Model for uri (a file, a folder, or models:/NAME/VERSION | models:/NAME@ALIAS)
    as the kind serving task makes it.

    Raises InputError naming the file when it is missing, is not a model of a kind that
    serves task, is truncated, or loads weights only from a pickle.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in KINDS.values() if task in k.tasks]
    if uri.startswith(REGISTRY_SCHEME):
        from quantmill.tracking.registry import download_registered_model, read_mlmodel

        local, name, version = download_registered_model(uri, workdir / "registry")
        flavors = read_mlmodel(local).get("flavors", {})
        for kind in kinds:
            if kind.flavor in flavors:
                return kind.from_registry(local, flavors, uri, name, version, workdir)
        expected = sorted({k.flavor for k in kinds})
        raise InputError(uri, f"unsupported MLflow flavor(s) {sorted(flavors)} for {task}; expected {' or '.join(expected)}")
    path = Path(uri)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if not path.is_dir():
        check_regular_file(path)
    kind = next((k for k in kinds if k.recognizes(path)), kinds[-1])
    return kind.resolve(path, uri, path.stem if path.is_file() else path.name, None, workdir)


def register_source_model(path: Path, name: str) -> str:
    """Register the model at path under name with its kind's MLflow flavor and return the
    new version, unless the latest version already holds the same weights (tag
    source_sha256), whose version is returned.

    Raises InputError when path is neither a model file nor a folder with safetensors weights.
    """
    import mlflow

    from quantmill.tracking.client import client
    from quantmill.tracking.registry import latest_version

    registry = client()
    kind = next((k for k in KINDS.values() if k.recognizes(path)), None)
    weights = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if kind is None or (path.is_dir() and not weights):
        raise InputError(path, "neither a model file nor a Hugging Face directory with safetensors weights")
    digest = sha256_files(weights, path) if path.is_dir() else sha256_file(path)
    latest = latest_version(name)
    if latest is not None and latest.tags.get("source_sha256") == digest:
        return str(latest.version)
    with mlflow.start_run(run_name=f"register-{name}"):
        info = kind.log_source(path, name)
    version = str(info.registered_model_version)
    registry.set_model_version_tag(name, version, "source_sha256", digest)
    return version
