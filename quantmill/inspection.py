"""Inspect an ONNX graph: what kind of model it is, how big, which operators it uses."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

# The operators whose weights INT8 quantization changes; the sensitivity scan groups these.
QUANTIZABLE_OPS = frozenset({"Conv", "MatMul", "Gemm"})


@dataclass(frozen=True)
class TensorSpec:
    """One graph input: its name, numpy dtype name, and shape (None for a symbolic dim)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class ModelProfile:
    """What inspect found: family, parameter count, operator counts, size on disk, inputs,
    and the quantizable nodes with their weight counts (candidates to keep precise)."""

    family: str
    parameters: int
    op_counts: dict[str, int]
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    quantizable_nodes: tuple[str, ...]


def inspect_model(onnx_path: Path) -> ModelProfile:
    """Return the ModelProfile of the ONNX model at onnx_path.

    Raises onnx's errors for an unreadable file; sources.check_onnx has vetted it before.
    """
    model = onnx.load(str(onnx_path))
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    parameters = int(sum(np.prod(init.dims, dtype=np.int64) for init in graph.initializer))
    ops = Counter(node.op_type for node in graph.node)
    inputs = tuple(_spec(value) for value in graph.input if value.name not in initializers)
    quantizable = tuple(
        node.name for node in graph.node
        if node.op_type in QUANTIZABLE_OPS and any(name in initializers for name in node.input)
    )
    return ModelProfile(
        family=_family(ops, inputs, graph),
        parameters=parameters,
        op_counts=dict(ops.most_common()),
        size_bytes=onnx_path.stat().st_size,
        inputs=inputs,
        quantizable_nodes=quantizable,
    )


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return TensorSpec(value.name, dtype, shape)


def _family(ops: Counter, inputs: tuple[TensorSpec, ...], graph: onnx.GraphProto) -> str:
    names = {spec.name for spec in inputs}
    attention = ops["Softmax"] > 0 and (ops["LayerNormalization"] > 0 or ops["SimplifiedLayerNormalization"] > 0)
    if attention and "input_ids" in names:
        is_lm = any(out.name == "logits" for out in graph.output)
        return "decoder-lm" if is_lm else "transformer-encoder"
    if ops["Conv"] > 0:
        # Depthwise-separable CNNs (MobileNet, EfficientNet: convolutions with a group per
        # channel) quantize and run unlike dense ones: INT8 depthwise kernels and per-channel
        # error behave otherwise, so their measured rows must not speak for dense CNNs.
        depthwise = any(node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)
                        for node in graph.node)
        return "depthwise-cnn" if depthwise else "cnn"
    return "mlp"

