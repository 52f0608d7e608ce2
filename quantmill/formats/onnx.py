"""ONNX formats, made with onnxruntime.quantization and run by ONNX Runtime: static INT8
(QDQ, calibrated activations), dynamic INT8, FP16, and the FP32 graph itself as the
baseline every ONNX format is measured against.

Static INT8 escalates through the calibration methods, then keeps the most sensitive layer
groups in float after a layerwise sensitivity scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from quantmill.atomic import atomic_file
from quantmill.data import Dataset
from quantmill.formats.base import CONSERVATIVE, FALLBACK, AsGiven, Format, NoOptions, Step
from quantmill.hardware import Hardware
from quantmill.hashing import fingerprint, sha256_tree
from quantmill.inspection import QUANTIZABLE_OPS, inspect_model
from quantmill.models.base import Model
from quantmill.progress import Progress
from quantmill.sensitivity import GroupScore, exclusion_sets, node_groups, scan

ONNX_KINDS = ("onnx", "hf-encoder")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class OnnxStaticOptions:
    """Static INT8: the calibration method, per-channel weights, the nodes kept in float,
    (for a sensitivity scan) the only nodes to quantize, 7-bit weights for CPUs without
    VNNI, and SmoothQuant's migration strength alpha (None: no smoothing; onnxruntime runs
    it through Intel Neural Compressor 2.x, which must be installed for it)."""

    calibration_method: str = "minmax"
    per_channel: bool = True
    nodes_to_exclude: tuple[str, ...] = field(default=())
    nodes_to_quantize: tuple[str, ...] | None = None
    reduce_range: bool = False
    smooth_quant_alpha: float | None = None

    def __post_init__(self) -> None:
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration_method {self.calibration_method!r} not in {CALIBRATION_METHODS}")
        if self.smooth_quant_alpha is not None and not 0 <= self.smooth_quant_alpha <= 1:
            raise ValueError(f"smooth_quant_alpha must be within 0..1, not {self.smooth_quant_alpha}")

    def describe(self) -> str:
        """Return e.g. 'minmax per-channel, 2 nodes kept in float'."""
        parts = [self.calibration_method, "per-channel" if self.per_channel else "per-tensor"]
        if self.nodes_to_exclude:
            parts.append(f"{len(self.nodes_to_exclude)} nodes kept in float")
        if self.nodes_to_quantize is not None:
            parts.append(f"only {len(self.nodes_to_quantize)} nodes quantized")
        if self.smooth_quant_alpha is not None:
            parts.append(f"SmoothQuant alpha {self.smooth_quant_alpha:g}")
        return " ".join(parts)


@dataclass(frozen=True)
class OnnxDynamicOptions:
    """Dynamic INT8: per-channel weights, 7-bit weights for CPUs without VNNI, nodes kept in float."""

    per_channel: bool = True
    reduce_range: bool = False
    nodes_to_exclude: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """Return e.g. 'per-channel'."""
        return "per-channel" if self.per_channel else "per-tensor"


def preprocessed(model_path: Path, cache_dir: Path) -> Path:
    """Return the pre-processed copy of model_path in cache_dir, making it on first use.

    The quantizer works on this graph, so node names for exclusion come from it.
    """
    # onnxruntime's recommended pre-processing: symbolic shape inference and graph
    # optimization, so that the quantizer sees fused, fully shaped nodes.
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = cache_dir / f"{sha256_tree(model_path)[:16]}.preprocessed.onnx"
    if not prepared.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(prepared) as tmp:
            quant_pre_process(str(model_path), str(tmp), skip_symbolic_shape=True)
    return prepared


class _OnnxFormat(Format):
    kinds = ONNX_KINDS
    runtime = "onnxruntime"

    def output_path(self, model: Model, options: object, calibration: Dataset | None, workdir: Path) -> Path:
        """Return the content-named .onnx path in workdir."""
        return super().output_path(model, options, calibration, workdir).with_suffix(".onnx")

    def register(self, path: Path, name: str, logged_uri: str) -> str:
        """Log the graph with MLflow's onnx flavor (weights inline) and register it as name."""
        import mlflow

        info = mlflow.onnx.log_model(onnx_model=onnx.load(str(path)), name="quantized_model",
                                     registered_model_name=name, save_as_external_data=False)
        return str(info.registered_model_version)


class OnnxFp32(AsGiven, _OnnxFormat):
    """The FP32 graph as it came: the baseline of every ONNX format."""

    name = "onnx-fp32"
    description = "FP32 graph (the baseline)"


class _Reader(CalibrationDataReader):
    def __init__(self, dataset: Dataset) -> None:
        # Histogram calibrators stack batches, so every batch keeps the full padded width.
        self._batches = iter(list(dataset.batches(CALIBRATION_BATCH, trim=False)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


class OnnxStatic(_OnnxFormat):
    """INT8 QDQ with per-channel weights and activations calibrated on the calibration set."""

    name = "onnx-int8-static"
    description = "INT8 QDQ, per-channel weights, calibrated activations"
    calibrated = True
    scans_sensitivity = True

    def default_options(self, hardware: Hardware) -> OnnxStaticOptions:
        """Return minmax calibration, with 7-bit weights on a CPU without VNNI."""
        return OnnxStaticOptions(reduce_range=not hardware.has_vnni())

    def ladder(self, reason: str, hardware: Hardware) -> tuple[Step, ...]:
        """Return every calibration method in turn."""
        first = self.default_options(hardware)
        return (Step(self.name, first, f"candidate: {reason}"),) + tuple(
            Step(self.name, replace(first, calibration_method=method), f"missed the budget; trying {method} calibration")
            for method in CALIBRATION_METHODS[1:]
        )

    def quantize(self, model: Model, options: OnnxStaticOptions, calibration: Dataset | None, workdir: Path,
                 progress: Progress | None = None) -> Path:
        """Write the static INT8 graph; the calibration ranges are cached in workdir per
        method and calibration set. Raises ValueError without calibration data."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        if calibration is None:
            raise ValueError("static INT8 needs calibration data")
        out = self.output_path(model, options, calibration, workdir)
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        reader = _Reader(calibration)
        prepared = preprocessed(model.path, workdir)
        # Ranges depend on the graph, the samples and the method, and on nothing else; a
        # smoothed graph is another graph, and onnxruntime refuses a range cache with it.
        ranges = None if options.smooth_quant_alpha is not None else \
            workdir / f"ranges-{fingerprint((prepared, calibration, options.calibration_method))[:16]}.json"
        smoothing = {} if options.smooth_quant_alpha is None else {
            "SmoothQuant": True, "SmoothQuantAlpha": options.smooth_quant_alpha,
            # Folding the scales into the previous op fails on the scalar Mul of an exported
            # GELU (neural-compressor 2.6: "Number of values (1536) does not match tensor
            # dimensions requiring 1 elements"), so the scales stay as Mul nodes in float.
            "SmoothQuantFolding": False}
        with atomic_file(out) as tmp:
            quantize_static(
                # neural-compressor's graph wrapper opens a str path, not a Path.
                str(prepared), tmp, reader,
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
                calibrate_method=methods[options.calibration_method],
                calibration_cache_path=ranges,
                extra_options={"CalibMovingAverage": False, **smoothing},
            )
        return out

    def sensitivity(
        self, model: Model, options: OnnxStaticOptions, calibration: Dataset, evaluation: Dataset,
        score, workdir: Path, progress=None,
    ) -> tuple[GroupScore, ...]:
        """Return the weighted-node groups of the pre-processed graph ranked by the drop
        score(path) reports with only that group quantized, telling progress after each."""
        groups = node_groups(inspect_model(preprocessed(model.path, workdir)).quantizable_nodes)

        def partial(nodes: tuple[str, ...]) -> Path:
            return self.quantize(model, replace(options, nodes_to_quantize=nodes, nodes_to_exclude=()), calibration, workdir)

        return scan(groups, partial, score, progress)

    def exclusion_steps(self, best: OnnxStaticOptions, scores: tuple[GroupScore, ...]) -> tuple[Step, ...]:
        """Return attempts that keep growing sets of the most sensitive groups in float,
        with the best options found so far."""
        return tuple(
            Step(
                self.name, replace(best, nodes_to_exclude=tuple(node for group in groups for node in group.nodes)),
                f"missed the budget; keeping the {len(groups)} most sensitive group(s) in float: "
                + ", ".join(f"{g.group} ({g.accuracy_drop:.2f} alone)" for g in groups),
            )
            for groups in exclusion_sets(scores)
        )


class OnnxDynamic(_OnnxFormat):
    """INT8 weights; activations quantized at run time."""

    name = "onnx-int8-dynamic"
    description = "INT8 weights, activations quantized at run time"
    safety = CONSERVATIVE

    def default_options(self, hardware: Hardware) -> OnnxDynamicOptions:
        """Return per-channel weights, 7-bit on a CPU without VNNI."""
        return OnnxDynamicOptions(reduce_range=not hardware.has_vnni())

    def quantize(self, model: Model, options: OnnxDynamicOptions, calibration: Dataset | None, workdir: Path,
                 progress: Progress | None = None) -> Path:
        """Write the dynamic INT8 graph."""
        from onnxruntime.quantization import QuantType, quantize_dynamic

        out = self.output_path(model, options, calibration, workdir)
        with atomic_file(out) as tmp:
            quantize_dynamic(
                preprocessed(model.path, workdir), tmp, weight_type=QuantType.QInt8, per_channel=options.per_channel,
                reduce_range=options.reduce_range, nodes_to_exclude=list(options.nodes_to_exclude) or None,
            )
        return out


class OnnxFp16(_OnnxFormat):
    """FP16 weights and compute with FP32 inputs and outputs (onnxruntime's float16 converter)."""

    name = "onnx-fp16"
    description = "FP16 weights and compute, FP32 inputs and outputs"
    safety = FALLBACK

    def quantize(self, model: Model, options: NoOptions, calibration: Dataset | None, workdir: Path,
                 progress: Progress | None = None) -> Path:
        """Write the FP16 graph."""
        from onnxruntime.transformers.float16 import convert_float_to_float16

        out = self.output_path(model, options, calibration, workdir)
        with atomic_file(out) as tmp:
            onnx.save(convert_float_to_float16(onnx.load(str(model.path)), keep_io_types=True), str(tmp))
        return out


FORMATS = (OnnxFp32(), OnnxStatic(), OnnxDynamic(), OnnxFp16())
