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
    python benchmarks/gpu_torchao_formats.py --stage cpu-quality --work DIR --out DIR --tiny-llama DIR --heldout FILE
    python benchmarks/gpu_torchao_formats.py --stage table --results JSON --recipe JSON --gpu-line LINE

The cpu-quality stage measures, on a machine without a GPU, the quality of the configurations
whose torchao kernels also run on the CPU (INT8 and FP8 weight-only): the same quantized
weights, made by the format's own quantize_checkpoint on the CPU and run in PyTorch there.

The table stage appends one row per torchao format measured to benchmark_tables/decoder_lm_gpu.csv:
its quality from the results (the GPU's, else the CPU's, which the row says), its speed from
this script's GPU run or, given --recipe, from benchmarks/gpu_torchao.py's torchao.json (the
compile mode the torch-cuda runtime uses). A format whose decode is not faster than BF16
beyond the noise is marked unavailable there, with its measured ratio as the reason, so
selection never offers it on the gpu target. The measure stage needs torchao and a CUDA device
(benchmarks/gpu_worker.sh torchao-formats runs it on the device).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu import gpu_name, ratio_interval  # noqa: E402
from gpu_target import make_artifacts, make_shape, measure  # noqa: E402

from quantmill.benchmark_table import SHIPPED_TABLE_DIR, TableRow, append_rows  # noqa: E402
from quantmill.formats import baseline_for, get_format, offered  # noqa: E402
from quantmill.formats.torchao import quantize_checkpoint  # noqa: E402
from quantmill.hardware import Hardware, local_cpu  # noqa: E402
from quantmill.logprobs import release, scratch_file  # noqa: E402
from quantmill.metrics import get_metric  # noqa: E402
from quantmill.models import get_kind, prepare_data, resolve_model  # noqa: E402
from quantmill.runtimes import get_runtime, torch_cuda  # noqa: E402
from quantmill.speed import FASTER, compare  # noqa: E402
from quantmill.targets import get_target  # noqa: E402

KIND, RUNTIME, TASK = "hf-causal-lm", "torch-cuda", "language-modeling"
# benchmarks/gpu_torchao.py's name for each scheme's published configuration.
RECIPE = {"int4-wo": "int4-wo-64", "int8-wo": "int8-wo", "fp8-wo": "fp8-wo", "fp8-dq": "fp8-dq-row"}


def torchao_formats() -> tuple:
    """Return BF16 on the torch-cuda runtime (the baseline) first, then the torchao formats the
    gpu target offers, the one with a group size (INT4, the judged one) last."""
    formats = [f for f in offered(KIND, get_target("gpu")) if f.runtime == RUNTIME]
    formats.sort(key=lambda f: getattr(f.default_options(local_cpu("")), "group_size", None) is not None)
    return (baseline_for(KIND, RUNTIME), *formats)


def scheme(name: str) -> str:
    """Return the torchao scheme of the format called name."""
    return get_format(name).default_options(local_cpu("")).scheme


def quality(model, files: dict[str, Path], heldout: Path, run=None) -> dict[str, dict]:
    """Return each artifact's Evaluation (as a dict) on the held-out text against the model's
    full-precision reference, each run by run(path, dataset) (by default its format's
    evaluation runner, on the GPU)."""
    evaluation = prepare_data(model, heldout, TASK)
    reference = get_runtime(get_kind(model.kind).reference_runtime).outputs(model.path, evaluation)
    metric = get_metric(TASK)
    out = {}
    try:
        for name, path in files.items():
            measured = metric.evaluate_model(reference, run or get_format(name).evaluation_runner(), path, evaluation)
            out[name] = {"metric": measured.metric_name, "baseline": measured.baseline_metric,
                         "quantized": measured.quantized_metric, "drop": measured.accuracy_drop,
                         "interval": measured.interval, "secondary": measured.secondary, "samples": measured.samples}
            print(name, json.dumps(out[name]), flush=True)
    finally:
        release(reference)
    return out


def cpu_quality(model_dir: Path, heldout: Path, work: Path) -> dict:
    """Return the quality, measured on this machine's CPU, of each torchao format whose
    kernels run there (the others with torchao's reason), and the CPU it ran on."""
    model = resolve_model(str(model_dir), TASK, work / "resolve")
    files, skipped = {}, {}
    for fmt in torchao_formats()[1:]:
        options = fmt.default_options(local_cpu(""))
        try:
            files[fmt.name] = quantize_checkpoint(model.path, options, fmt.output_path(model, options, None, work), "cpu")
        except RuntimeError as err:  # torchao has no CPU path for this configuration
            skipped[fmt.name] = f"{type(err).__name__}: {err}"[:300]

    def on_cpu(path: Path, data) -> object:
        return torch_cuda.log_probs(path, data.inputs["input_ids"], scratch_file(), device="cpu")

    stack = f"torch {version('torch')}, torchao {version('torchao')}, transformers {version('transformers')}"
    return {"cpu": local_cpu(stack).describe(), "quality": quality(model, files, heldout, on_cpu), "not_on_cpu": skipped}


def recipe_speed(recipe: dict) -> dict[str, dict]:
    """Return, per torchao scheme in a gpu_torchao.py torchao.json, its decode ratio to BF16
    (both BF16 runs) with the 95% interval, the verdict, the compression, and BF16's median."""
    configs = recipe["configs"]
    base = [r for key in ("bf16", "bf16-again") for r in configs.get(key, {}).get("runs", [])]
    out = {}
    for name, key in RECIPE.items():
        if "runs" not in configs.get(key, {}):
            continue
        ratio, low, high = ratio_interval(configs[key]["runs"], base)
        out[name] = {"ratio": ratio, "low": low, "high": high,
                     "verdict": FASTER if low > 1 else "slower" if high < 1 else "within the noise",
                     "compression": configs["bf16"]["weights_bytes"] / configs[key]["weights_bytes"],
                     "baseline": float(sorted(base)[len(base) // 2])}
    return out


def recipe_rows(quality_results: dict, recipe: dict, machine: str) -> tuple[TableRow, ...]:
    """Return one row per torchao format with both a quality (from cpu-quality results) and a
    speed in the recipe's torchao.json; unavailable where the decode is not faster than BF16."""
    speed, gpu_line, reps = recipe_speed(recipe), recipe["gpu"], len(recipe["configs"]["bf16"]["runs"])
    rows = []
    for name, measured in quality_results["quality"].items():
        if scheme(name) not in speed:
            continue
        s = speed[scheme(name)]
        told = f"{s['ratio']:.3f}x (95% CI {s['low']:.3f}-{s['high']:.3f}x, Welch on logs)"
        unavailable = "" if s["verdict"] == FASTER else (
            f"decode not faster than BF16 on {gpu_line} (Llama-3-8B shape, compiled {recipe['mode']}, as the torch-cuda "
            f"runtime compiles): {told}, {s['verdict']}")
        rows.append(TableRow(
            "decoder-lm", "gpu", name, round(measured["drop"], 3), round(s["compression"], 3), round(s["ratio"], 3), 1,
            f"benchmarks/gpu_torchao.py --mode {recipe['mode']} on {gpu_line} {recipe['date']} (speed: Llama-3-8B shape, "
            f"random weights, vocabulary 128256, written as gpt-fast writes it; static KV cache, decode compiled whole into "
            f"CUDA graphs; {reps} timed generations of {recipe['tokens']} tokens; "
            f"baseline BF16 in the same run, {s['baseline']:.1f} tok/s; {told}; torch {recipe['torch']}, torchao "
            f"{recipe['torchao']}; drop = the trained tiny Llama's % perplexity increase over FP32 with the same torchao "
            f"weights, quantized and evaluated on the CPU ({quality_results['cpu']}) by "
            f"benchmarks/gpu_torchao_formats.py --stage cpu-quality; not measured on the GPU)",
            machine, "llama-3-8b shape, random weights (speed); tiny Llama (quality, on the CPU)", True,
            round(measured["secondary"]["mean_kl"], 5), unavailable))
    return tuple(rows)


def table_rows(results: dict, gpu_line: str) -> tuple[TableRow, ...]:
    """Return one benchmark-table row per torchao format in a torchao-formats.json: the drop
    (% perplexity increase) and KL divergence of the tiny Llama measured with CUDA, the speed and
    compression of the random-weight shape against BF16 on the same runtime in the same run;
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
            round(bench["decode_tokens_per_s"] / base["decode_tokens_per_s"], 3), 1,
            f"benchmarks/gpu_torchao_formats.py on {gpu_line} {results['date']} (speed: {shape} shape, random weights, "
            f"torch-cuda runtime, decode compiled with CUDA graphs over a static KV cache, a fresh process per model and "
            f"round; baseline BF16 on the same runtime in the same run, {base['decode_tokens_per_s']:.1f} tok/s; "
            f"{ratio.describe()}; drop = the trained tiny Llama's % perplexity increase, quantized and evaluated with CUDA)",
            machine, f"{shape} shape, random weights (speed); tiny Llama (quality)", True,
            round(measured["secondary"]["mean_kl"], 5), unavailable))
    return tuple(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("measure", "cpu-quality", "table"), default="measure")
    parser.add_argument("--results", type=Path, help="torchao-formats.json or torchao-cpu-quality.json (table stage)")
    parser.add_argument("--recipe", type=Path, help="gpu_torchao.py's torchao.json: the speed (table stage)")
    parser.add_argument("--gpu-line", help="the GPU and its driver as nvidia-smi named them (table stage)")
    parser.add_argument("--machine", help="the GPU machine's Hardware.identity(), for a --recipe row (table stage)")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tiny-llama", type=Path)
    parser.add_argument("--heldout", type=Path)
    parser.add_argument("--shape", default="llama-3.2-1b")
    args = parser.parse_args()
    if args.stage == "table":
        results = json.loads(args.results.read_text())
        rows = (recipe_rows(results, json.loads(args.recipe.read_text()), args.machine) if args.recipe
                else table_rows(results, args.gpu_line))
        append_rows(SHIPPED_TABLE_DIR / "decoder_lm_gpu.csv", rows)
        print(f"{len(rows)} rows appended to {SHIPPED_TABLE_DIR / 'decoder_lm_gpu.csv'}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "cpu-quality":
        results = {"date": date.today().isoformat(), **cpu_quality(args.tiny_llama, args.heldout, args.work)}
        (args.out / "torchao-cpu-quality.json").write_text(json.dumps(results, indent=1))
        print(json.dumps({"not_on_cpu": results["not_on_cpu"]}))
        return
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
