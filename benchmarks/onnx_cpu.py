"""INT8 vs FP32 on this CPU for both demo models, measured in one run.

Prints, per model and format, the throughput ratio against FP32 at batch 1 and 32, the size
ratio and the accuracy drop. With --append-table, appends the measured rows to
benchmark_tables/onnx_cpu.csv, which format selection reads.

    .venv/bin/python benchmarks/onnx_cpu.py [--seconds 2] [--append-table]
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path

from quantmill.benchmark import benchmark_models
from quantmill.benchmark_table import SHIPPED_TABLE_DIR, TableRow, append_rows
from quantmill.calibration import CalibrationPolicy, stratified_subsample
from quantmill.data import load_dataset
from quantmill.evaluation import evaluate, predict
from quantmill.formats import ONNX_FORMATS
from quantmill.hardware import local_cpu
from quantmill.inspection import inspect_model
from quantmill.quantizers.onnx_runtime import QuantizeOptions, quantize
from quantmill.sources import resolve_model
from quantmill.tracking import quantmill_home
from quantmill.zoo.digits import build_digits
from quantmill.zoo.minilm import minilm_dir, write_text_sets

TABLE = SHIPPED_TABLE_DIR / "onnx_cpu.csv"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per batch size and round")
    parser.add_argument("--append-table", action="store_true")
    args = parser.parse_args()
    hardware = local_cpu()
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
            ref = resolve_model(uri, quantmill_home() / "work")
            profile = inspect_model(ref.onnx_path)
            calibration = stratified_subsample(
                load_dataset(calibration_path, profile.inputs, ref.tokenizer_dir), CalibrationPolicy().max_samples, 0
            )
            evaluation = load_dataset(evaluation_path, profile.inputs, ref.tokenizer_dir)
            outputs = predict(ref.onnx_path, evaluation)
            paths, drops = {"fp32": ref.onnx_path}, {}
            for fmt in ONNX_FORMATS:
                options = QuantizeOptions(
                    fmt, "minmax" if fmt == "onnx-int8-static" else None, reduce_range=not hardware.has_vnni()
                )
                paths[fmt] = quantize(ref.onnx_path, Path(scratch) / f"{name}-{fmt}.onnx", options, calibration, Path(scratch) / name)
                drops[fmt] = evaluate(task, outputs, predict(paths[fmt], evaluation), evaluation).accuracy_drop
            measured = benchmark_models(paths, evaluation, args.seconds)
            base = measured["fp32"]
            print(f"\n{name} ({profile.family}, {profile.parameters:,} params)")
            print(f"  {'format':<20} {'thr b1 ratio':>12} {'thr b32 ratio':>13} {'size ratio':>10} {'drop pts':>9}")
            for fmt in ONNX_FORMATS:
                bench = measured[fmt]
                b1 = bench.throughput["1"] / base.throughput["1"]
                b32 = bench.throughput["32"] / base.throughput["32"]
                size = bench.size_bytes / base.size_bytes
                print(f"  {fmt:<20} {b1:>12.2f} {b32:>13.2f} {size:>10.3f} {drops[fmt]:>9.2f}")
                rows.append(TableRow(
                    profile.family, "cpu", fmt, round(drops[fmt], 3), round(1 / size, 3), round(b32, 3), 1,
                    f"benchmarks/onnx_cpu.py on {hardware.cpu} {hardware.cores} cores "
                    f"{'+'.join(hardware.isa) or 'no-simd-flags'} {stamp} ({name})",
                ))
    if args.append_table:
        append_rows(TABLE, tuple(rows))
        print(f"\nappended {len(rows)} rows to {TABLE}")


if __name__ == "__main__":
    main()
