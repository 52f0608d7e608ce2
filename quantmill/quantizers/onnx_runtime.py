"""INT8 and FP16 quantization of ONNX graphs with onnxruntime.quantization."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from quantmill.atomic import atomic_file
from quantmill.data import Dataset
from quantmill.hashing import fingerprint
from quantmill.inspection import QUANTIZABLE_OPS

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize: the format, and for calibrated formats the calibration method,
    per-channel weights, the nodes kept in float, (for a sensitivity scan) the only nodes to
    quantize, and 7-bit weights for CPUs without VNNI."""

    format: str
    calibration_method: str | None = None
    per_channel: bool = True
    nodes_to_exclude: tuple[str, ...] = field(default=())
    nodes_to_quantize: tuple[str, ...] | None = None
    reduce_range: bool = False

    def describe(self) -> str:
        """Return a short human description, e.g. 'onnx-int8-static minmax per-channel, 2 nodes kept in float'."""
        parts = [self.format]
        if self.calibration_method:
            parts.append(self.calibration_method)
            parts.append("per-channel" if self.per_channel else "per-tensor")
        if self.nodes_to_exclude:
            parts.append(f"{len(self.nodes_to_exclude)} nodes kept in float")
        if self.nodes_to_quantize is not None:
            parts.append(f"only {len(self.nodes_to_quantize)} nodes quantized")
        return " ".join(parts)


def quantized_path(cache_dir: Path, options: QuantizeOptions, calibration: Dataset) -> Path:
    """Return where the model quantized with options and calibration is kept in cache_dir:
    named by their content, so one file never holds two different results."""
    return cache_dir / f"quantized-{fingerprint((options, calibration))[:20]}.onnx"


class _Reader(CalibrationDataReader):
    def __init__(self, dataset: Dataset) -> None:
        # Histogram calibrators stack batches, so every batch keeps the full padded width.
        self._batches = iter(list(dataset.batches(CALIBRATION_BATCH, trim=False)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize(
    model_path: Path, out_path: Path, options: QuantizeOptions, calibration: Dataset | None, cache_dir: Path
) -> Path:
    """Write the quantized model for options to out_path and return it.

    cache_dir keeps the pre-processed graph and calibration ranges so that the attempts of
    one run calibrate once per method. Raises ValueError for a calibrated format without
    calibration data or an unknown format; onnxruntime's errors pass through.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if options.format == "onnx-int8-static":
        if calibration is None or options.calibration_method not in CALIBRATION_METHODS:
            raise ValueError("static INT8 needs calibration data and a calibration method")
        prepared = preprocessed(model_path, cache_dir)
        ranges = cache_dir / f"ranges-{options.calibration_method}-{calibration.sha256[:12]}.json"
        quantize_static(
            prepared, out_path, _Reader(calibration),
            quant_format=QuantFormat.QDQ,
            # Weighted ops only (Gather for embedding tables): quantizing Add/Softmax lets
            # the attention mask's huge negative constant set the scale and wipes out the
            # attention scores.
            op_types_to_quantize=sorted(QUANTIZABLE_OPS | {"Gather"}),
            # onnxruntime's advice for x86 without VNNI: 7-bit weights avoid int16
            # saturation in the u8*s8 kernels.
            reduce_range=options.reduce_range,
            per_channel=options.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(options.nodes_to_exclude) or None,
            nodes_to_quantize=None if options.nodes_to_quantize is None else list(options.nodes_to_quantize),
            calibrate_method=CALIBRATION_METHODS[options.calibration_method],
            calibration_cache_path=ranges,
            extra_options={"CalibMovingAverage": False},
        )
    elif options.format == "onnx-int8-dynamic":
        quantize_dynamic(
            preprocessed(model_path, cache_dir), out_path,
            weight_type=QuantType.QInt8, per_channel=options.per_channel, reduce_range=options.reduce_range,
            nodes_to_exclude=list(options.nodes_to_exclude) or None,
        )
    elif options.format == "onnx-fp16":
        model = convert_float_to_float16(onnx.load(str(model_path)), keep_io_types=True)
        onnx.save(model, str(out_path))
    else:
        raise ValueError(f"unknown format {options.format!r}")
    return out_path


def preprocessed(model_path: Path, cache_dir: Path) -> Path:
    """Return the pre-processed copy of model_path in cache_dir, making it on first use.

    The quantizer works on this graph, so node names for exclusion come from it.
    """
    # onnxruntime's recommended pre-processing: symbolic shape inference and graph
    # optimization, so that the quantizer sees fused, fully shaped nodes.
    prepared = cache_dir / f"{model_path.stem}.preprocessed.onnx"
    if not prepared.exists():
        with atomic_file(prepared) as tmp:
            quant_pre_process(str(model_path), str(tmp), skip_symbolic_shape=True)
    return prepared
