"""Where an ONNX model's time goes on this CPU, FP32 against its INT8 forms: ONNX Runtime's
own profiler (SessionOptions.enable_profiling) over repeated batches, summed per operator
kind, with depthwise convolutions (group == channels) counted apart from the others.

EfficientNet-Lite0 (quantmill.zoo.efficientnet_lite0) and every ONNX format quantmill offers
for it on the CPU (default options for this CPU), at batch 1 and 32.

    .venv/bin/python benchmarks/onnx_op_time.py [--batches 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

from quantmill.formats import offered
from quantmill.hardware import local_cpu
from quantmill.models import get_kind, resolve_model
from quantmill.state import quantmill_home
from quantmill.targets import HOST
from quantmill.zoo.efficientnet_lite0 import INPUT, build_efficientnet_lite0


def _depthwise_nodes(path: Path) -> set[str]:
    """Return the names of the graph's depthwise convolutions (one group per channel),
    quantized or not."""
    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    names = set()
    for node in graph.node:
        if node.op_type in ("Conv", "QLinearConv", "ConvInteger"):
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            weight = node.input[3 if node.op_type == "QLinearConv" else 1]
            dims = shapes.get(weight) or shapes.get(weight.replace("_DequantizeLinear_Output", ""))
            if group > 1 and (dims is None or dims[1] == 1):
                names.add(node.name)
    return names


def op_times(path: Path, batch: np.ndarray, batches: int) -> dict[str, float]:
    """Return the mean milliseconds per batch spent in each operator kind (depthwise Conv
    apart), from ONNX Runtime's profile of `batches` runs after a warm-up."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="quantmill-profile-") as scratch:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, {INPUT: batch})
        for _ in range(batches):
            session.run(None, {INPUT: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    depthwise = _depthwise_nodes(path)
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")]
        kind = event["args"].get("op_name", "?")
        totals[f"{kind} (depthwise)" if node in depthwise else kind] += event["dur"] / 1000.0
    # The warm-up run is profiled too.
    return {kind: ms / (batches + 1) for kind, ms in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    files = build_efficientnet_lite0(quantmill_home() / "models" / "efficientnet-lite0")
    model = resolve_model(str(files.model), "classification", quantmill_home() / "work")
    kind = get_kind(model.kind)
    calibration = kind.load_data(model, files.calibration)
    evaluation = kind.load_data(model, files.evaluation).inputs[INPUT]
    hardware = local_cpu("onnxruntime")
    print(f"hardware: {hardware.describe()}")
    with tempfile.TemporaryDirectory(prefix="quantmill-op-time-") as scratch:
        paths = {"fp32": model.path}
        for fmt in offered(model.kind, HOST):
            paths[fmt.name] = fmt.quantize(model, fmt.default_options(hardware), calibration, Path(scratch))
        for size in (1, 32):
            times = {label: op_times(path, evaluation[:size], args.batches) for label, path in paths.items()}
            kinds = sorted({k for t in times.values() for k in t}, key=lambda k: -max(t.get(k, 0.0) for t in times.values()))
            print(f"\nbatch {size}: ms per batch in each operator kind (ONNX Runtime's profiler, {args.batches} runs)")
            print(f"{'operator':<28}" + "".join(f"{label:>20}" for label in paths))
            for op in kinds:
                print(f"{op:<28}" + "".join(f"{times[label].get(op, 0.0):>20.2f}" for label in paths))
            print(f"{'total':<28}" + "".join(f"{sum(times[label].values()):>20.2f}" for label in paths))


if __name__ == "__main__":
    main()
