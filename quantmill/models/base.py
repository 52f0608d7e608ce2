"""A model ready for the pipeline, and what every model kind provides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from quantmill.calibration import CalibrationPolicy
from quantmill.data import Dataset
from quantmill.inspection import TensorSpec


@dataclass(frozen=True)
class Model:
    """A resolved, fingerprinted model.

    uri: what the user named; name/version: registry name and version (the file or folder
    name and None outside the registry); kind: the model kind's name; path: what formats
    read (an ONNX graph, or a Hugging Face directory); sha256: the fingerprint of the
    source weights; family, parameters, size_bytes: what inspection found; tokenizer_dir:
    where text is tokenized from, if the model has a tokenizer; inputs and op_counts: the
    ONNX graph's, for kinds quantized as ONNX; architecture: the model's own class name
    (config.json's architectures) where it has one; reference: what every quantized form is
    measured against, in words (the report names it).
    """

    uri: str
    name: str
    version: str | None
    kind: str
    path: Path
    sha256: str
    family: str
    parameters: int
    size_bytes: int
    tokenizer_dir: Path | None = None
    inputs: tuple[TensorSpec, ...] = ()
    op_counts: dict[str, int] = field(default_factory=dict)
    architecture: str = ""
    reference: str = ""

    def to_dict(self) -> dict:
        """Return a JSON-ready dict that from_dict() reads back (a flow parameter)."""
        return {**asdict(self), "path": str(self.path),
                "tokenizer_dir": None if self.tokenizer_dir is None else str(self.tokenizer_dir)}

    @classmethod
    def from_dict(cls, data: dict) -> Model:
        """Return the Model that to_dict() wrote. Raises KeyError/TypeError on another shape."""
        return cls(**{
            **data, "path": Path(data["path"]),
            "tokenizer_dir": None if data.get("tokenizer_dir") is None else Path(data["tokenizer_dir"]),
            "inputs": tuple(TensorSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in data.get("inputs", ())),
        })


class ModelKind:
    """What a kind of model declares and does: its name, the tasks it serves, the MLflow
    flavor it is registered with, the runtime that produces its full-precision reference
    outputs, and its calibration policy; and its
    hooks: recognize and resolve a local path or a downloaded registry model, load data,
    the per-sample features whose distributions the calibration check and the drift sweep
    compare, and logging the source model to MLflow."""

    name: str
    tasks: tuple[str, ...]
    flavor: str
    reference_runtime: str
    policy: CalibrationPolicy = CalibrationPolicy()

    def recognizes(self, path: Path) -> bool:
        """Return whether path (a local file or folder) looks like this kind's source."""
        raise NotImplementedError

    def resolve(self, path: Path, uri: str, name: str, version: str | None, workdir: Path) -> Model:
        """Return the Model for path. Raises InputError naming the file and the problem."""
        raise NotImplementedError

    def from_registry(self, local: Path, flavors: dict, uri: str, name: str, version: str, workdir: Path) -> Model:
        """Return the Model of a downloaded registry model of this kind's flavor."""
        raise NotImplementedError

    def load_data(self, model: Model, path: Path) -> Dataset:
        """Return the data set at path ready to feed model. Raises InputError naming the file."""
        raise NotImplementedError

    def load_samples(self, model: Model, path: Path) -> Dataset:
        """Return the samples that data.save_samples wrote for model."""
        raise NotImplementedError

    def features(self, model: Model, dataset: Dataset) -> dict[str, np.ndarray]:
        """Return per-sample features by name, whose distributions the KS tests compare."""
        raise NotImplementedError

    def classes(self, model: Model) -> int | None:
        """Return how many classes model's first output scores, when its graph says so
        statically; None otherwise."""
        return None

    def log_source(self, path: Path, name: str):
        """Log path as a model in the active MLflow run, registered under name; return
        MLflow's ModelInfo."""
        raise NotImplementedError
