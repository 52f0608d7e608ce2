"""quantmill's torchao formats on one NVIDIA GPU, through quantmill's own code: each format's
artifact made by its own quantize (transformers' TorchAoConfig on the GPU, saved as
safetensors), its quality measured by the language-modeling metric against the full-precision
reference (perplexity increase, KL divergence, same top token; the format's evaluation runner,
PyTorch on CUDA), and its speed by quantmill.benchmark.benchmark_target('gpu', ...), the
function the benchmark-on-hardware/gpu flow runs: the torch-cuda runtime, every model in a
fresh process per round, taking turns, BF16 on the same runtime as the baseline, decode
compiled with CUDA graphs over a static KV cache, until the judged pair (INT4 against BF16)
is settled. Each ratio is quantmill.speed.compare's, as the gate states it.

Quality is the trained tiny Llama's (a real model's weights, not a random one's); speed is a
random-weight model of a published shape (speed depends on shapes, not on values; the tiny
Llama is too small for its decode to be bound by memory).

    python benchmarks/gpu_torchao_formats.py --work DIR --out DIR --tiny-llama DIR --heldout FILE \\
        [--shape llama-3.2-1b]
    python benchmarks/gpu_torchao_formats.py --stage table --results JSON --gpu-line LINE

The table stage appends one row per torchao format measured to benchmark_tables/decoder_lm_gpu.csv:
its quality and its speed against BF16 from this script's GPU run. A format whose decode is not
faster than BF16 beyond the noise is marked unavailable there, with its measured ratio as the
reason, so selection never offers it on the gpu target. The measure stage needs torchao and a
CUDA device (benchmarks/gpu_worker.sh torchao-formats runs it on the device).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu import gpu_name  # noqa: E402
from gpu_target import make_artifacts, make_shape, measure  # noqa: E402

from quantmill.benchmark_table import SHIPPED_TABLE_DIR, TableRow, append_rows  # noqa: E402
from quantmill.formats import baseline_for, get_format, offered  # noqa: E402
from quantmill.hardware import Hardware, local_cpu  # noqa: E402
from quantmill.logprobs import release  # noqa: E402
from quantmill.metrics import get_metric  # noqa: E402
from quantmill.models import get_kind, prepare_data  # noqa: E402
from quantmill.runtimes import get_runtime  # noqa: E402
from quantmill.speed import FASTER, compare  # noqa: E402
from quantmill.targets import get_target  # noqa: E402

KIND, RUNTIME, TASK = "hf-causal-lm", "torch-cuda", "language-modeling"


def torchao_formats() -> tuple:
    """Return BF16 on the torch-cuda runtime (the baseline) first, then the torchao formats the
    gpu target offers, the one with a group size (INT4, the judged one) last."""
    formats = [f for f in offered(KIND, get_target("gpu")) if f.runtime == RUNTIME]
    formats.sort(key=lambda f: getattr(f.default_options(local_cpu("")), "group_size", None) is not None)
    return (baseline_for(KIND, RUNTIME), *formats)


def quality(model, files: dict[str, Path], heldout: Path) -> dict[str, dict]:
    """Return each artifact's Evaluation (as a dict) on the held-out text against the model's
    full-precision reference, each run by its format's evaluation runner (on the GPU)."""
    evaluation = prepare_data(model, heldout, TASK)
    reference = get_runtime(get_kind(model.kind).reference_runtime).outputs(model.path, evaluation)
    metric = get_metric(TASK)
    out = {}
    try:
        for name, path in files.items():
            measured = metric.evaluate_model(reference, get_format(name).evaluation_runner(), path, evaluation)
            out[name] = {"metric": measured.metric_name, "baseline": measured.baseline_metric,
                         "quantized": measured.quantized_metric, "drop": measured.accuracy_drop,
                         "interval": measured.interval, "secondary": measured.secondary, "samples": measured.samples}
            print(name, json.dumps(out[name]), flush=True)
    finally:
        release(reference)
    return out


def table_rows(results: dict, gpu_line: str) -> tuple[TableRow, ...]:
    """Return one benchmark-table row per torchao format in a torchao-formats.json: the drop
    (% perplexity increase) and KL divergence of the tiny Llama measured with CUDA, the speed and
    compression of the random-weight shape against BF16 on the same runtime in the same run (the
    speed as the gate states it: quantmill.speed.compare's ratio over the paired rounds);
    unavailable where that decode is not faster beyond the noise, with the ratio."""
    speed, shape = results["speed"], results["shape"]
    baseline = baseline_for(KIND, RUNTIME).name
    base = speed["benchmarks"][baseline]
    machine = Hardware(**{**speed["hardware"], "isa": tuple(speed["hardware"]["isa"])}).identity()
    rows = []
    for name, bench in speed["benchmarks"].items():
        if name == baseline:
            continue
        ratio = compare(bench["decode_rounds"], base["decode_rounds"])
        measured = results["quality"][name]
        unavailable = "" if ratio.verdict == FASTER else (
            f"decode not faster than BF16 on {gpu_line} ({shape} shape): {ratio.describe()}, {ratio.verdict}")
        rows.append(TableRow(
            "decoder-lm", "gpu", name, round(measured["drop"], 3), round(base["size_bytes"] / bench["size_bytes"], 3),
            round(ratio.ratio, 3), 1,
            f"benchmarks/gpu_torchao_formats.py on {gpu_line} {results['date']} (speed: {shape} shape, random weights, "
            f"torch-cuda runtime, decode compiled with CUDA graphs over a static KV cache, a fresh process per model and "
            f"round; baseline BF16 on the same runtime in the same run, {base['decode_tokens_per_s']:.1f} tok/s; "
            f"{ratio.describe()}; drop = the trained tiny Llama's % perplexity increase, quantized and evaluated with CUDA)",
            machine, f"{shape} shape, random weights (speed); tiny Llama (quality)", True,
            round(measured["secondary"]["mean_kl"], 5), unavailable))
    return tuple(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("measure", "table"), default="measure")
    parser.add_argument("--results", type=Path, help="torchao-formats.json (table stage)")
    parser.add_argument("--gpu-line", help="the GPU and its driver as nvidia-smi named them (table stage)")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tiny-llama", type=Path)
    parser.add_argument("--heldout", type=Path)
    parser.add_argument("--shape", default="llama-3.2-1b")
    args = parser.parse_args()
    if args.stage == "table":
        rows = table_rows(json.loads(args.results.read_text()), args.gpu_line)
        append_rows(SHIPPED_TABLE_DIR / "decoder_lm_gpu.csv", rows)
        print(f"{len(rows)} rows appended to {SHIPPED_TABLE_DIR / 'decoder_lm_gpu.csv'}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    formats = torchao_formats()
    results = {"date": date.today().isoformat(), "gpu": gpu_name(), "shape": args.shape,
               "formats": [f.name for f in formats]}
    started = time.perf_counter()
    tiny, files, seconds = make_artifacts(args.tiny_llama, args.work / "tiny-llama-work", formats)
    results["quality"] = quality(tiny, files, args.heldout)
    results["quality_quantize_seconds"] = seconds
    (args.out / "torchao-formats.json").write_text(json.dumps(results, indent=1))
    shaped = make_shape(args.shape, args.tiny_llama, args.work / args.shape)
    model, files, seconds = make_artifacts(shaped, args.work / f"{args.shape}-work", formats)
    results["speed_quantize_seconds"] = seconds
    results["speed"] = measure(model, files, args.heldout, "gpu")
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"speed": results["speed"].get("decode_vs_f16"), "seconds": results["seconds"]}), flush=True)
    (args.out / "torchao-formats.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
