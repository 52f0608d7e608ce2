"""INT8 vs FP32 on this CPU for both demo models, measured in one run.

Prints, per model and format, the throughput ratio against FP32 at batch 1 and 32, the size
ratio and the accuracy drop. With --append-table, appends the measured rows to
benchmark_tables/onnx_cpu.csv, which format selection reads.

    .venv/bin/python benchmarks/onnx_cpu.py [--seconds 2] [--append-table]
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path

from quantmill.benchmark_table import SHIPPED_TABLE_DIR, TableRow, append_rows, table_script_parser
from quantmill.calibration import stratified_subsample
from quantmill.formats import baseline_for, offered
from quantmill.hardware import local_cpu
from quantmill.metrics import get_metric
from quantmill.models import get_kind, resolve_model
from quantmill.runtimes import get_runtime
from quantmill.state import quantmill_home
from quantmill.targets import HOST
from quantmill.zoo.digits import build_digits
from quantmill.zoo.minilm import minilm_dir, write_text_sets

TABLE = SHIPPED_TABLE_DIR / "onnx_cpu.csv"


def main() -> None:
    parser = table_script_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per batch size and round")
    args = parser.parse_args()
    onnxruntime = get_runtime("onnxruntime")
    hardware = local_cpu(onnxruntime.describe(HOST))
    data = quantmill_home() / "models"
    digits = build_digits(data / "digits")
    text_calibration, text_evaluation = write_text_sets(data / "text")
    models = (
        ("digits-cnn", str(digits.model), "classification", digits.calibration, digits.evaluation),
        ("all-minilm-l6-v2", str(minilm_dir()), "embedding", text_calibration, text_evaluation),
    )
    print(f"hardware: {hardware.describe()}")
    stamp = datetime.date.today().isoformat()
    rows = []
    with tempfile.TemporaryDirectory(prefix="quantmill-benchmark-") as scratch:
        for name, uri, task, calibration_path, evaluation_path in models:
            model = resolve_model(uri, task, quantmill_home() / "work")
            kind = get_kind(model.kind)
            calibration = stratified_subsample(kind.load_data(model, calibration_path), kind.policy.max_samples, 0)
            evaluation = kind.load_data(model, evaluation_path)
            reference = onnxruntime.outputs(model.path, evaluation)
            formats = [f for f in offered(model.kind, HOST) if f.runtime == onnxruntime.name]
            workdir = Path(scratch) / name
            baseline = baseline_for(model.kind)
            paths, drops = {"fp32": baseline.quantize(model, baseline.default_options(hardware), None, workdir)}, {}
            for fmt in formats:
                paths[fmt.name] = fmt.quantize(model, fmt.default_options(hardware), calibration, workdir)
                outputs = onnxruntime.outputs(paths[fmt.name], evaluation)
                drops[fmt.name] = get_metric(task).compare(reference, outputs, evaluation).accuracy_drop
            measured = onnxruntime.benchmark(paths, evaluation, HOST, args.seconds)
            base = measured["fp32"]
            print(f"\n{name} ({model.family}, {model.parameters:,} params)")
            print(f"  {'format':<20} {'thr b1 ratio':>12} {'thr b32 ratio':>13} {'size ratio':>10} {'drop pts':>9}")
            for fmt in formats:
                bench = measured[fmt.name]
                b1 = bench.throughput["1"] / base.throughput["1"]
                b32 = bench.throughput["32"] / base.throughput["32"]
                size = bench.size_bytes / base.size_bytes
                print(f"  {fmt.name:<20} {b1:>12.2f} {b32:>13.2f} {size:>10.3f} {drops[fmt.name]:>9.2f}")
                rows.append(TableRow(
                    model.family, HOST.name, fmt.name, round(drops[fmt.name], 3), round(1 / size, 3), round(b32, 3), 1,
                    f"benchmarks/onnx_cpu.py on {hardware.cpu} {hardware.cores} cores "
                    f"{'+'.join(hardware.isa) or 'no-simd-flags'} {stamp} ({name})", hardware.identity(),
                ))
    if args.append_table:
        append_rows(TABLE, tuple(rows))
        print(f"\nappended {len(rows)} rows to {TABLE}")


if __name__ == "__main__":
    main()
