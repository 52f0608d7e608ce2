"""quantmill's gpu target end to end on a machine with an NVIDIA GPU: the artifacts are made
by quantmill's own GGUF formats from a model resolved as quantize-model resolves it (llama.cpp's
converter and quantizer), and measured by quantmill.benchmark.benchmark_target('gpu', ...), the
function the benchmark-on-hardware/gpu flow runs: every model in fresh processes, taking turns,
all layers on the GPU, with the decode bound from the GPU's measured copy bandwidth, until the
judged pair is settled. Each ratio is quantmill.speed.compare's, as the gate states it. The same
files also go through llama.cpp's own llama-bench, a second opinion on the harness.

    python benchmarks/gpu_target.py --stage convert|all --work DIR --out DIR \\
        --tiny-llama DIR --heldout FILE --llama-bench BIN [--shapes llama-3-8b,llama-3.2-1b] [--via-flow]
    python benchmarks/gpu_target.py --stage table --results JSON [JSON ...]   # on any machine

The table stage appends the published shapes' measured GPU rows from those results to
benchmark_tables/decoder_lm_gpu.csv, which format selection reads for the gpu target.

Needs llama-cpp-python's package with LLAMA_CPP_LIB_PATH naming a CUDA build of its llama.cpp,
QUANTMILL_LLAMA_CPP_SRC naming that llama.cpp's source, and its gguf-py on PYTHONPATH
(benchmarks/gpu.sh target-convert / target sets them). Random-weight models have the
published shapes (speed depends on shapes, not on values); the trained tiny Llama is measured
on the cpu target too. Prints one JSON line per model group and writes DIR/gpu-target.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu import SHAPES, VOCAB, gpu_name  # noqa: E402

from quantmill.benchmark import benchmark_target  # noqa: E402
from quantmill.benchmark_table import SHIPPED_TABLE_DIR, TableRow, append_rows, load_table  # noqa: E402
from quantmill.formats import baseline_for, get_format, offered  # noqa: E402
from quantmill.hardware import Hardware, local_cpu  # noqa: E402
from quantmill.models import get_kind, resolve_model  # noqa: E402
from quantmill.speed import compare  # noqa: E402
from quantmill.targets import get_target  # noqa: E402

KIND = "hf-causal-lm"
# llama.cpp's scheme names; the formats themselves come from quantmill's registry, the
# baseline first and the judged one (the 4-bit) last.
SCHEMES = ("Q8_0", "Q4_K_M")


def gguf_formats() -> tuple:
    """Return the F16 baseline and the formats of SCHEMES that the gpu target offers."""
    host = local_cpu("")
    by_scheme = {getattr(f.default_options(host), "scheme", None): f for f in offered(KIND, get_target("gpu"))}
    return (baseline_for(KIND, "llama.cpp"), *(by_scheme[s] for s in SCHEMES))


def make_shape(name: str, tokenizer: Path, directory: Path) -> Path:
    """Write a random-weight Llama of the named shape with the tiny Llama's tokenizer to directory (once)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (directory / "config.json").exists():
        return directory
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                         rope_theta=500000.0, **SHAPES[name])
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory)
    for file in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(tokenizer / file, directory / file)
    return directory


def make_artifacts(model_dir: Path, work: Path, formats: tuple) -> tuple[object, dict[str, Path], dict[str, float]]:
    """Return the resolved model, its artifact per format name (made by the format's own
    quantize, as quantize-model makes them) and the seconds each took."""
    model = resolve_model(str(model_dir), "language-modeling", work / "resolve")
    workdir = work / "artifacts"
    workdir.mkdir(parents=True, exist_ok=True)
    files, seconds = {}, {}
    for fmt in formats:
        name = fmt.name
        started = time.perf_counter()
        files[name] = fmt.quantize(model, fmt.default_options(local_cpu("")), None, workdir)
        seconds[name] = round(time.perf_counter() - started, 1)
        print(model.name, name, seconds[name], "s", flush=True)
    return model, files, seconds


def llama_bench(binary: Path, files: dict[str, Path]) -> dict[str, dict]:
    """Return llama-bench's decode (tg128) and prefill (pp128) tokens/s per format, ten repetitions in one
    process, all layers on the GPU: llama.cpp's own way to compare the files, which the pipeline's must match."""
    done = subprocess.run([str(binary), "-ngl", "999", "-p", "128", "-n", "128", "-r", "10", "-o", "json",
                           *[a for f in files.values() for a in ("-m", str(f))]], capture_output=True, text=True, check=True)
    by_file = {f.name: name for name, f in files.items()}
    out: dict[str, dict] = {}
    for row in json.loads(done.stdout):
        kind = "decode_tokens_per_s" if row["n_gen"] > 0 else "prompt_tokens_per_s"
        out.setdefault(by_file[Path(row["model_filename"]).name], {})[kind] = [round(x, 2) for x in row["samples_ts"]]
    return out


def agreement(measured: dict, bench: dict[str, dict], baseline: str) -> dict:
    """Return, per quantized format, its decode ratio to the baseline as the pipeline measured it
    (speed.compare over its paired rounds) and as llama-bench did (mean over mean), and how far
    apart they are (%); and the baseline's fraction of the bandwidth bound in the pipeline."""
    rows = {}
    base = measured["benchmarks"][baseline]
    for name, b in measured["benchmarks"].items():
        if name == baseline:
            continue
        pipeline = compare(b["decode_rounds"], base["decode_rounds"]).ratio
        native = float(np.mean(bench[name]["decode_tokens_per_s"]) / np.mean(bench[baseline]["decode_tokens_per_s"]))
        rows[name] = {"pipeline": round(pipeline, 3), "llama_bench": round(native, 3),
                      "apart_pct": round(100 * (pipeline / native - 1), 2)}
    return {"ratios": rows, "baseline_fraction_of_bound": round(base["fraction_of_bound"], 3),
            "baseline_decode_tokens_per_s": round(base["decode_tokens_per_s"], 2)}


def measure(model, files: dict[str, Path], heldout: Path, target: str, via_flow: bool = False) -> dict:
    """Return benchmark_target's measurements on target, the judged pair (the last format
    against the first, the baseline) settled, with each format's ratio to the baseline. With
    via_flow, through the benchmark-on-hardware flow itself (its tasks, on Prefect's
    temporary server), as a gpu worker runs it for quantize-model."""
    started = time.perf_counter()
    baseline, judged = list(files)[0], list(files)[-1]
    if via_flow:
        from flows.benchmark_on_hardware import benchmark_on_hardware
        from quantmill.benchmark import TargetBenchmarks

        measured = TargetBenchmarks.from_dict(benchmark_on_hardware(
            target, model.to_dict(), {name: {"format": name, "path": str(path)} for name, path in files.items()},
            str(heldout), judged=[judged, baseline]))
    else:
        data = get_kind(model.kind).load_data(model, heldout)
        measured = benchmark_target(get_target(target), {name: (get_format(name), path) for name, path in files.items()}, data,
                                    judged=(judged, baseline))
    if not measured.measured:
        return {"target": target, "reason": measured.reason}
    base = measured.benchmarks[baseline].decode_rounds
    ratios = {name: compare(b.decode_rounds, base).describe() + f", {compare(b.decode_rounds, base).verdict}"
              for name, b in measured.benchmarks.items() if name != baseline}
    return {**measured.to_dict(), "hardware_line": measured.hardware.describe(), "decode_vs_f16": ratios,
            "seconds": round(time.perf_counter() - started, 1)}


def table_rows(results: dict, source: str, gpu_line: str) -> tuple[TableRow, ...]:
    """Return benchmark-table rows for the published shapes in one gpu-target.json (random
    weights, so speed only): per quantized format, its median decode speed over F16's measured
    in the same run (paired rounds) and its compression, each row naming the GPU and its
    driver (gpu_line, from nvidia-smi), the model, the timing method and the baseline. The
    drop column is SmolLM2-135M-Instruct's perplexity increase for the same GGUF type measured
    with CUDA (the shipped table's real-model gpu rows, benchmarks/gpu_quality.sh): random
    weights have no quality of their own, and the source says whose it is."""
    drops = {r.format: r.accuracy_drop for r in load_table(SHIPPED_TABLE_DIR)
             if r.family == "decoder-lm" and r.hardware == "gpu" and not r.test_model}
    rows = []
    for label, entry in results["models"].items():
        gpu = entry.get("gpu") or {}
        if label not in SHAPES or not gpu.get("benchmarks"):
            continue
        baseline = baseline_for(KIND, "llama.cpp").name
        base = gpu["benchmarks"][baseline]
        machine = Hardware(**{**gpu["hardware"], "isa": tuple(gpu["hardware"]["isa"])}).identity()
        for name, bench in gpu["benchmarks"].items():
            if name == baseline or name not in drops:
                continue
            ratio = compare(bench["decode_rounds"], base["decode_rounds"])
            rows.append(TableRow(
                "decoder-lm", "gpu", name, drops[name], round(base["size_bytes"] / bench["size_bytes"], 3),
                round(bench["decode_tokens_per_s"] / base["decode_tokens_per_s"], 3), 1,
                f"{source} on {gpu_line} {results['date']} ({label} shape, random weights, speed only; timed by "
                f"llama-bench pp128/tg128 through the benchmark-on-hardware flow, a fresh process per model and round; "
                f"baseline F16 in the same run, {base['decode_tokens_per_s']:.1f} tok/s; {ratio.describe()}; "
                f"drop = SmolLM2-135M-Instruct's % perplexity increase for the same type measured with CUDA)",
                machine, f"{label} shape, random weights", True))
    return tuple(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("convert", "all", "table"), required=True)
    parser.add_argument("--results", type=Path, nargs="*", default=[], help="gpu-target.json files (table stage)")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tiny-llama", type=Path)
    parser.add_argument("--heldout", type=Path)
    parser.add_argument("--llama-bench", type=Path)
    parser.add_argument("--shapes", default="llama-3-8b,llama-3.2-1b")
    parser.add_argument("--via-flow", action="store_true", help="measure through the benchmark-on-hardware flow")
    parser.add_argument("--gpu-line", help="the GPU and its driver as nvidia-smi named them (table stage)")
    args = parser.parse_args()
    if args.stage == "table":
        rows = sum((table_rows(json.loads(p.read_text()), "benchmarks/gpu_target.py", args.gpu_line) for p in args.results), ())
        append_rows(SHIPPED_TABLE_DIR / "decoder_lm_gpu.csv", rows)
        print(f"{len(rows)} rows appended to {SHIPPED_TABLE_DIR / 'decoder_lm_gpu.csv'}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    # A --tiny-llama folder holding only the tokenizer gives the shapes their tokenizer and is not measured itself.
    models = {"tiny-llama": args.tiny_llama} if (args.tiny_llama / "model.safetensors").exists() else {}
    for shape in filter(None, args.shapes.split(",")):
        models[shape] = make_shape(shape, args.tiny_llama, args.work / shape)
    import torch

    results = {"date": date.today().isoformat(), "gpu": gpu_name() if torch.cuda.is_available() else None, "models": {}}
    for label, directory in models.items():
        formats = gguf_formats()
        model, files, seconds = make_artifacts(directory, args.work / f"{label}-work",
                                               formats[:1] if args.stage == "convert" else formats)
        if args.stage == "convert":
            continue
        entry = {"parameters": model.parameters, "quantize_seconds": seconds,
                 "sizes": {name: path.stat().st_size for name, path in files.items()},
                 "gpu": measure(model, files, args.heldout, "gpu", args.via_flow), "via_flow": args.via_flow}
        if label == "tiny-llama":
            entry["cpu"] = measure(model, files, args.heldout, "cpu", args.via_flow)
        if args.llama_bench:
            entry["llama_bench_gpu"] = llama_bench(args.llama_bench, files)
            if entry["gpu"].get("benchmarks"):
                entry["agreement"] = agreement(entry["gpu"], entry["llama_bench_gpu"], list(files)[0])
        results["models"][label] = entry
        print(json.dumps({label: entry}), flush=True)
        (args.out / "gpu-target.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
