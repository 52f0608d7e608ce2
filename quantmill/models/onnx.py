"""ONNX models (classifiers, or any graph whose first output the task metric reads): an ONNX
file, or an onnx-flavor MLflow model whose weights MLflow may keep in side files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from quantmill.atomic import atomic_file
from quantmill.calibration import input_features
from quantmill.data import Dataset, load_dataset
from quantmill.errors import InputError
from quantmill.hashing import sha256_file
from quantmill.inspection import inspect_model
from quantmill.models.base import Model, ModelKind


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
    _check_finite_weights(path)
    return model


def _check_finite_weights(path: Path) -> None:
    # A NaN or inf weight makes every quantizer's scale meaningless (onnxruntime asserts
    # deep inside calibration); it is refused here, naming the tensor.
    for init in onnx.load(str(path)).graph.initializer:
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            bad = int(np.count_nonzero(~np.isfinite(numpy_helper.to_array(init))))
            if bad:
                raise InputError(path, f"weight {init.name!r} holds {bad} NaN or inf value(s)")


def onnx_model(graph: Path, uri: str, name: str, version: str | None, kind: str, sha256: str,
               tokenizer_dir: Path | None = None, architecture: str = "",
               reference: str = "the FP32 ONNX graph on ONNX Runtime") -> Model:
    """Return the Model of an ONNX graph, with what inspecting the graph finds."""
    profile = inspect_model(graph)
    return Model(
        uri, name, version, kind, graph, sha256, profile.family, profile.parameters, profile.size_bytes,
        tokenizer_dir, profile.inputs, profile.op_counts, architecture, reference,
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


class OnnxKind(ModelKind):
    """An ONNX graph, quantized and run with ONNX Runtime."""

    name = "onnx"
    tasks = ("classification", "embedding")
    flavor = "onnx"
    reference_runtime = "onnxruntime"

    def recognizes(self, path: Path) -> bool:
        """Return whether path is a file (every single-file model quantmill takes is ONNX)."""
        return path.is_file()

    def resolve(self, path: Path, uri: str, name: str, version: str | None, workdir: Path) -> Model:
        """Return the Model of the ONNX file at path, its weights folded into one file under
        workdir when they live in side files. Raises InputError for a file that is not ONNX."""
        model = check_onnx(path)
        external = any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
        if external:
            # Weights in side files (as MLflow may save ONNX): fold them into one file so
            # that every later stage, and the fingerprint, sees the whole model.
            full = onnx.load(str(path))
            digest = hashlib.sha256(full.SerializeToString(deterministic=True)).hexdigest()
            path = workdir / f"{digest[:16]}.onnx"
            if not path.exists():
                with atomic_file(path) as tmp:
                    onnx.save(full, str(tmp))
        return onnx_model(path, uri, name, version, self.name, sha256_file(path))

    def from_registry(self, local: Path, flavors: dict, uri: str, name: str, version: str, workdir: Path) -> Model:
        """Return the Model of a downloaded onnx-flavor registry model."""
        return self.resolve(local / flavors["onnx"]["data"], uri, name, version, workdir)

    def load_data(self, model: Model, path: Path) -> Dataset:
        """Return the .npz or .jsonl data at path shaped for the graph's inputs."""
        return load_dataset(path, model.inputs, model.tokenizer_dir)

    def load_samples(self, model: Model, path: Path) -> Dataset:
        """Return the samples that data.save_samples wrote for model."""
        return load_dataset(path, model.inputs, None)

    def features(self, model: Model, dataset: Dataset) -> dict[str, np.ndarray]:
        """Return the graph inputs' per-sample features (calibration.input_features)."""
        return input_features(dataset)

    def classes(self, model: Model) -> int | None:
        """Return the static last dimension of the graph's first output (None if symbolic)."""
        graph = onnx.load(str(model.path), load_external_data=False).graph
        dims = graph.output[0].type.tensor_type.shape.dim
        return dims[-1].dim_value or None if dims else None

    def log_source(self, path: Path, name: str):
        """Log the ONNX file with MLflow's onnx flavor, weights inline, registered as name."""
        import mlflow

        # Inline weights: MLflow's default writes them as a side file in the working directory.
        return mlflow.onnx.log_model(onnx_model=onnx.load(str(path)), name="model", registered_model_name=name,
                                     save_as_external_data=False)
