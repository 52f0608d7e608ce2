"""SmoothQuant for MiniLM's static INT8 on this CPU: its alpha swept on the demo's text sets,
each alpha's drop in retrieval agreement@10 against FP32, and the best one's speed against
FP32 and dynamic INT8, all measured in one run.

onnxruntime's SmoothQuant option runs through Intel Neural Compressor 2.x, which is not a
quantmill dependency (2.6 pins numpy<2, which the rest needs; its SmoothQuant code imports
under numpy 2). Install it beside the venv, then run:

    .venv/bin/pip install -q --no-deps --target .quantmill/inc neural-compressor==2.6 schema \\
        "setuptools<81" opencv-python-headless pycocotools
    PYTHONPATH=.quantmill/inc .venv/bin/python benchmarks/smoothquant_cpu.py [--alphas 0.3,0.5,0.7,0.9]

Then, to see where the loss is, the static drop with parts of the graph kept in float or
other settings (no neural-compressor needed): the FFN down-projections (their input is the
GELU output), those and the embedding Gathers, the attention's activation-by-activation
MatMuls, 8-bit weights, percentile and entropy calibration.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from quantmill.calibration import stratified_subsample
from quantmill.formats import baseline_for, get_format
from quantmill.formats.onnx import OnnxDynamic, OnnxStatic, preprocessed
from quantmill.hardware import local_cpu
from quantmill.metrics import get_metric
from quantmill.models import get_kind, resolve_model
from quantmill.runtimes import get_runtime
from quantmill.state import quantmill_home
from quantmill.targets import HOST
from quantmill.zoo.minilm import minilm_dir, write_text_sets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alphas", default="0.3,0.5,0.7,0.9")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per batch size and round")
    args = parser.parse_args()
    onnxruntime = get_runtime("onnxruntime")
    hardware = local_cpu(onnxruntime.describe(HOST))
    calibration_path, evaluation_path = write_text_sets(quantmill_home() / "models" / "text")
    model = resolve_model(str(minilm_dir()), "embedding", quantmill_home() / "work")
    kind = get_kind(model.kind)
    calibration = stratified_subsample(kind.load_data(model, calibration_path), kind.policy.max_samples, 0)
    evaluation = kind.load_data(model, evaluation_path)
    reference = onnxruntime.outputs(model.path, evaluation)
    metric = get_metric("embedding")
    static, dynamic = get_format(OnnxStatic.name), get_format(OnnxDynamic.name)
    print(f"hardware: {hardware.describe()}")
    with tempfile.TemporaryDirectory(prefix="quantmill-smoothquant-") as scratch:
        workdir = Path(scratch)
        first = static.default_options(hardware)
        paths, drops = {}, {}
        for alpha in [None] + [float(a) for a in args.alphas.split(",")]:
            label = "static" if alpha is None else f"static-sq{alpha:g}"
            paths[label] = static.quantize(model, replace(first, smooth_quant_alpha=alpha), calibration, workdir)
            drops[label] = metric.compare(reference, onnxruntime.outputs(paths[label], evaluation), evaluation).accuracy_drop
            print(f"{label:<16} drop {drops[label]:6.2f} points ({first.calibration_method})", flush=True)
        paths["dynamic"] = dynamic.quantize(model, dynamic.default_options(hardware), None, workdir)
        drops["dynamic"] = metric.compare(reference, onnxruntime.outputs(paths["dynamic"], evaluation), evaluation).accuracy_drop
        best = min((label for label in drops if label.startswith("static-sq")), key=drops.get)
        fp32 = baseline_for(model.kind)
        timed = {"fp32": fp32.quantize(model, fp32.default_options(hardware), None, workdir),
                 "static": paths["static"], best: paths[best], "dynamic": paths["dynamic"]}
        measured = onnxruntime.benchmark(timed, evaluation, HOST, args.seconds)
        base = measured["fp32"]
        print(f"\n{'':<16} {'drop pts':>8} {'thr b1 x fp32':>13} {'thr b32 x fp32':>14}")
        for label in ("static", best, "dynamic"):
            bench = measured[label]
            print(f"{label:<16} {drops[label]:>8.2f} {bench.throughput['1'] / base.throughput['1']:>13.2f} "
                  f"{bench.throughput['32'] / base.throughput['32']:>14.2f}")
        print("\nwhere the loss is (static, no smoothing):")
        for label, options in diagnostic_options(first, preprocessed(model.path, workdir)).items():
            path = static.quantize(model, options, calibration, workdir)
            drop = metric.compare(reference, onnxruntime.outputs(path, evaluation), evaluation).accuracy_drop
            print(f"  {label:<48} drop {drop:6.2f} points", flush=True)


def diagnostic_options(first, graph_path: Path) -> dict:
    """Return static INT8 options that each keep one suspect in float or change one setting.
    The node names are those of MiniLM's exported BERT graph (this benchmark's one model)."""
    import onnx

    graph = onnx.load(str(graph_path)).graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    ffn_down = tuple(n.name for n in matmuls if "/output/dense" in n.name and "attention" not in n.name)
    gathers = tuple(n.name for n in graph.node if n.op_type == "Gather" and any(i in constants for i in n.input))
    act_act = tuple(n.name for n in matmuls if not any(i in constants for i in n.input))
    return {
        f"FFN down-projections in float ({len(ffn_down)})": replace(first, nodes_to_exclude=ffn_down),
        f"those and the embedding Gathers ({len(gathers)})": replace(first, nodes_to_exclude=ffn_down + gathers),
        f"activation x activation MatMuls in float ({len(act_act)})": replace(first, nodes_to_exclude=act_act),
        "8-bit weights (no reduce_range)": replace(first, reduce_range=False),
        "percentile calibration": replace(first, calibration_method="percentile"),
        "entropy calibration": replace(first, calibration_method="entropy"),
    }


if __name__ == "__main__":
    main()
