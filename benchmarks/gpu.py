"""The GPU table, measured on a machine with an NVIDIA GPU: llama.cpp's CUDA backend on GGUF
(F16, Q8_0, Q4_K_M) and torchao's FP8 / INT8 / INT4 in PyTorch, on random-weight models
with published Llama shapes (speed only: speed depends on shapes, not on weight values), and
the quality of each torchao config on the trained tiny Llama (perplexity, KL, top-1
agreement against BF16 on its held-out text).

Every figure is measured in the run and stated against the GPU it ran on and that GPU's
measured device-to-device copy bandwidth, the bound a decode step (which reads every weight
once per token) cannot beat. Ratios compare formats on the same runtime only.

    python benchmarks/gpu.py torch --out DIR --tiny-llama DIR --heldout FILE
    python benchmarks/gpu.py gguf --out DIR --llama-cpp SRC --build BUILD --tokenizer DIR

benchmarks/gpu.sh is the command sequence that ran it through the device tool; rows go to
DIR/gpu-rows.csv (benchmarks/results/ keeps the ones published in the README).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from quantmill.measure import gpu_memory_bandwidth_bytes_per_s  # noqa: E402

# Published shapes (Llama-3-8B, Llama-3.2-1B); the vocabulary is the tiny Llama's
# SentencePiece one (4096), the only tokenizer these machines have, which llama.cpp's
# converter needs: the embedding and output layers are smaller than the real ones.
SHAPES = {
    "llama-3-8b": dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, num_attention_heads=32,
                       num_key_value_heads=8, tie_word_embeddings=False),
    "llama-3.2-1b": dict(hidden_size=2048, num_hidden_layers=16, intermediate_size=8192, num_attention_heads=32,
                         num_key_value_heads=8, tie_word_embeddings=True),
}
VOCAB = 4096
PROMPT, NEW_TOKENS, ROUNDS = 128, 128, 3
BATCHES = (1, 8)
COLUMNS = ("date", "gpu", "shape", "weights", "runtime", "format", "batch", "prefill_tokens_per_s", "decode_tokens_per_s",
           "decode_spread", "vs_baseline", "ci_low", "ci_high", "peak_memory_gb", "size_gb", "bytes_per_token",
           "fraction_of_bound", "quality", "note")


def log(*parts) -> None:
    print(*parts, flush=True)


def gpu_name() -> str:
    import torch

    props = torch.cuda.get_device_properties(0)
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                            text=True).stdout.strip()
    return f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB, driver {driver})"


def ratio_interval(candidate: list[float], baseline: list[float]) -> tuple[float, float, float]:
    """Geometric-mean ratio of two runs' per-repetition figures and its 95% interval
    (Welch's t on the logs: the repetitions of one format are not paired with the other's)."""
    a, b = np.log(candidate), np.log(baseline)
    ratio = math.exp(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return ratio, 0.0, math.inf
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return ratio, math.exp(interval.low), math.exp(interval.high)


def paired_interval(candidate: list[float], baseline: list[float]) -> tuple[float, float, float]:
    """As quantmill.speed.compare: rounds taken in turns, round i of one paired with round i of the other."""
    logs = np.log(np.asarray(candidate) / np.asarray(baseline))
    ratio = math.exp(logs.mean())
    if len(logs) < 2 or np.ptp(logs) == 0:
        return ratio, ratio, ratio
    interval = stats.ttest_1samp(logs, 0.0).confidence_interval(0.95)
    return ratio, math.exp(interval.low), math.exp(interval.high)


def kv_bytes_per_token(shape: dict, context: int, bytes_per_value: int = 2) -> int:
    """Bytes of K and V read per decoded token at context tokens of history."""
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    return 2 * shape["num_hidden_layers"] * shape["num_key_value_heads"] * head_dim * context * bytes_per_value


class Rows:
    def __init__(self, out: Path) -> None:
        self.path = out / "gpu-rows.csv"
        new = not self.path.exists()
        self.handle = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=COLUMNS)
        if new:
            self.writer.writeheader()

    def add(self, **row) -> None:
        self.writer.writerow({"date": date.today().isoformat(), **row})
        self.handle.flush()
        log("ROW", json.dumps(row))


# ---------------------------------------------------------------------------------- torch


TORCH_CONFIGS = ("bf16", "int4-wo-g128-tile", "fp8-dyn-perrow", "int8-wo", "int8-dyn")


def torchao_config(name: str):
    """Return the torchao config for name (None for the BF16 baseline)."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
    )

    return {
        "bf16": None,
        "fp8-dyn-perrow": Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
        "int4-wo-g128-tile": Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d"),
        "int8-wo": Int8WeightOnlyConfig(),
        "int8-dyn": Int8DynamicActivationInt8WeightConfig(),
    }[name]


def quantized(model, name: str):
    from torchao.quantization import quantize_

    config = torchao_config(name)
    if config is None:
        return model
    made = copy.deepcopy(model)
    quantize_(made, config)
    return made


def weight_bytes(model) -> int:
    """Bytes the model's parameters occupy on the GPU (torchao's subclasses report their packed storage)."""
    import torch

    total = 0
    for p in model.parameters():
        inner = getattr(p, "__tensor_flatten__", None)
        if inner is not None:
            names, _ = p.__tensor_flatten__()
            total += sum(getattr(p, n).numel() * getattr(p, n).element_size() for n in names
                         if isinstance(getattr(p, n), torch.Tensor))
        else:
            total += p.numel() * p.element_size()
    return total


def decode_figures(model, batch: int, rounds_out: dict, label: str, compile_mode: str | None = None) -> None:
    """Append one round's decode tokens/s per sequence (static KV cache; transformers
    compiles the decode step with CUDA graphs, with its default compile settings, or with
    compile_mode and fullgraph=True when given) and prefill tokens/s to rounds_out[label]."""
    import torch
    from transformers import CompileConfig

    prompt = torch.randint(3, VOCAB, (batch, PROMPT), device="cuda")
    kwargs = dict(do_sample=False, cache_implementation="static", pad_token_id=0)
    if compile_mode:
        # One graph for the whole decode step (a graph break is an error, not a slow path).
        kwargs["compile_config"] = CompileConfig(fullgraph=True, mode=compile_mode)

    def timed(new: int) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(prompt, max_new_tokens=new, min_new_tokens=new, **kwargs)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    one, full = timed(1), timed(NEW_TOKENS)
    with torch.no_grad():
        long = torch.randint(3, VOCAB, (1, 512), device="cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        model(long, logits_to_keep=1)
        torch.cuda.synchronize()
        prefill = 512 / (time.perf_counter() - start)
    entry = rounds_out.setdefault(label, {"decode": [], "prefill": []})
    entry["decode"].append((NEW_TOKENS - 1) / (full - one))
    entry["prefill"].append(prefill)


def run_torch(args, rows: Rows, gpu: str, bandwidth: float) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape_name = args.shape
    shape = SHAPES[shape_name]
    config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         rope_theta=500000.0, **shape)
    with torch.device("cuda"):
        base = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    models, failed = {}, {}
    for name in args.configs.split(","):
        try:
            models[name] = quantized(base, name)
            log(name, "weights", weight_bytes(models[name]) / 1e9, "GB")
        except Exception as err:  # a config torchao cannot apply here is a row saying why
            failed[name] = f"{type(err).__name__}: {err}"[:300]
            log(name, "FAILED", failed[name])
    rounds: dict = {}
    peaks: dict = {}
    for batch in map(int, args.batches.split(",")):
        for name in list(models):
            # Warm-up: compiles the decode step and records its CUDA graphs for this batch.
            try:
                torch.cuda.reset_peak_memory_stats()
                resident, started = torch.cuda.memory_allocated(), time.perf_counter()
                decode_figures(models[name], batch, {}, "warm", args.compile_mode)
                # Every model stays resident so that rounds take turns: its own peak is its
                # weights plus what its decode added on top of everything resident.
                peaks[(name, batch)] = (weight_bytes(models[name]) + torch.cuda.max_memory_allocated() - resident) / 1e9
                log(name, batch, "warm-up", round(time.perf_counter() - started, 1), "s")
            except Exception as err:
                failed[f"{name}@{batch}"] = f"{type(err).__name__}: {err}"[:300]
                log(name, batch, "FAILED", failed[f"{name}@{batch}"])
        for _ in range(ROUNDS):
            for name in models:
                if f"{name}@{batch}" not in failed:
                    decode_figures(models[name], batch, rounds, (name, batch), args.compile_mode)
    for (name, batch), figures in rounds.items():
        base_figures = rounds.get(("bf16", batch))
        decode = statistics.median(figures["decode"])
        wbytes = weight_bytes(models[name])
        embed = VOCAB * shape["hidden_size"] * 2
        bytes_per_token = wbytes - embed + kv_bytes_per_token(shape, PROMPT + NEW_TOKENS // 2) * batch
        ratio, low, high = paired_interval(figures["decode"], base_figures["decode"]) if base_figures else (math.nan,) * 3
        rows.add(gpu=gpu, shape=shape_name, weights="random weights, speed only", runtime=f"torch {torch.__version__}",
                 format=name, batch=batch, prefill_tokens_per_s=round(statistics.median(figures["prefill"]), 1),
                 decode_tokens_per_s=round(decode, 2), decode_spread=f"{min(figures['decode']):.2f}-{max(figures['decode']):.2f}",
                 vs_baseline=round(ratio, 3), ci_low=round(low, 3), ci_high=round(high, 3),
                 peak_memory_gb=round(peaks.get((name, batch), math.nan), 2), size_gb=round(wbytes / 1e9, 3),
                 bytes_per_token=bytes_per_token, fraction_of_bound=round(decode * bytes_per_token / bandwidth, 3),
                 quality="", note=f"torch.compile via generate(cache_implementation='static'"
                                  f"{', fullgraph, mode=' + args.compile_mode if args.compile_mode else ''}), {ROUNDS} rounds in turns; "
                                  f"bound = copy bandwidth {bandwidth / 1e12:.2f} TB/s / bytes per token")
    for name, reason in failed.items():
        rows.add(gpu=gpu, shape=shape_name, weights="random weights, speed only", runtime=f"torch {torch.__version__}",
                 format=name, note=f"failed: {reason}")


def run_quality(args, rows: Rows, gpu: str) -> None:
    """Perplexity, KL and top-1 agreement of each torchao config against BF16 on the tiny Llama."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(args.tiny_llama)
    ids = tokenizer(Path(args.heldout).read_text()[:400_000], add_special_tokens=False)["input_ids"]
    windows = torch.tensor([[1] + ids[i * 128:(i + 1) * 128] for i in range(min(64, len(ids) // 128))], device="cuda")
    base = LlamaForCausalLM.from_pretrained(args.tiny_llama, dtype=torch.bfloat16).cuda().eval()

    def logprobs(model):
        with torch.no_grad():
            return torch.log_softmax(model(windows).logits[:, :-1].float(), dim=-1)

    ref = logprobs(base)
    targets = windows[:, 1:]
    base_nll = -ref.gather(-1, targets[..., None])[..., 0].mean()
    for name in args.configs.split(","):
        try:
            lp = logprobs(quantized(base, name))
        except Exception as err:
            rows.add(gpu=gpu, shape="tiny-llama", weights="trained", runtime=f"torch {torch.__version__}", format=name,
                     note=f"failed: {type(err).__name__}: {err}"[:300])
            continue
        nll = -lp.gather(-1, targets[..., None])[..., 0].mean()
        kl = (ref.exp() * (ref - lp)).sum(-1).mean()
        top1 = (ref.argmax(-1) == lp.argmax(-1)).float().mean()
        increase = 100 * (math.exp(nll.item() - base_nll.item()) - 1)
        rows.add(gpu=gpu, shape="tiny-llama", weights="trained (quality only)", runtime=f"torch {torch.__version__}",
                 format=name, quality=f"ppl +{increase:.3f}%; KL {kl.item():.5f}; top-1 {100 * top1.item():.2f}%",
                 note=f"{len(windows)} held-out windows of 128 tokens vs BF16")


# ----------------------------------------------------------------------------------- gguf


# llama.cpp's own names; the rows name them "GGUF <scheme>" (the measurements log, not
# quantmill's format registry, which this script does not need on the GPU machine).
GGUF_SCHEMES = ("Q8_0", "Q4_K_M")


def run_gguf(args, rows: Rows, gpu: str, bandwidth: float) -> None:
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    src, build, work = Path(args.llama_cpp), Path(args.build), Path(args.work)
    env = {**os.environ, "PYTHONPATH": f"{src / 'gguf-py'}:{os.environ.get('PYTHONPATH', '')}"}
    for shape_name in args.shapes.split(","):
        shape = SHAPES[shape_name]
        hf = work / shape_name
        if not (hf / "config.json").exists():
            torch.manual_seed(0)
            config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                                 rope_theta=500000.0, **shape)
            with torch.device("cuda"):
                model = LlamaForCausalLM(config).to(torch.bfloat16)
            model.save_pretrained(hf)
            del model
            for name in ("tokenizer.model", "tokenizer_config.json"):
                shutil.copy(Path(args.tokenizer) / name, hf / name)
        files = {"F16": work / f"{shape_name}-f16.gguf"}
        started = time.perf_counter()
        subprocess.run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(hf), "--outtype", "f16", "--outfile",
                        str(files["F16"])], check=True, env=env, capture_output=True)
        log(shape_name, "convert", round(time.perf_counter() - started, 1), "s")
        for scheme in GGUF_SCHEMES:
            files[scheme] = work / f"{shape_name}-{scheme.lower()}.gguf"
            started = time.perf_counter()
            subprocess.run([str(build / "bin" / "llama-quantize"), str(files["F16"]), str(files[scheme]), scheme],
                           check=True, capture_output=True)
            log(shape_name, scheme, round(time.perf_counter() - started, 1), "s")
        bench = subprocess.run(
            [str(build / "bin" / "llama-bench"), "-ngl", "99", "-p", "512", "-n", "128", "-r", "5", "-o", "json",
             *[a for f in files.values() for a in ("-m", str(f))]],
            check=True, capture_output=True, text=True)
        results = json.loads(bench.stdout)
        by = {}
        for r in results:
            scheme = next(s for s, f in files.items() if Path(r["model_filename"]).name == f.name)
            kind = "decode" if r["n_gen"] > 0 else "prefill"
            by.setdefault(scheme, {})[kind] = r["samples_ts"]
        embed_params = VOCAB * shape["hidden_size"]
        for scheme, figures in by.items():
            size = files[scheme].stat().st_size
            # Bytes read per decoded token: the whole file but one embedding row (the
            # embedding table's share estimated by its parameter count), plus F16 K and V.
            params = _parameters(shape)
            bytes_per_token = int(size * (params - embed_params) / params) + kv_bytes_per_token(shape, NEW_TOKENS // 2)
            decode = statistics.mean(figures["decode"])
            ratio, low, high = ratio_interval(figures["decode"], by["F16"]["decode"])
            rows.add(gpu=gpu, shape=shape_name, weights="random weights, speed only", runtime="llama.cpp CUDA (llama-bench -ngl 99)",
                     format=f"GGUF {scheme}", batch=1,
                     prefill_tokens_per_s=round(statistics.mean(figures["prefill"]), 1),
                     decode_tokens_per_s=round(decode, 2),
                     decode_spread=f"{min(figures['decode']):.2f}-{max(figures['decode']):.2f}",
                     vs_baseline=round(ratio, 3), ci_low=round(low, 3), ci_high=round(high, 3), peak_memory_gb="",
                     size_gb=round(size / 1e9, 3), bytes_per_token=bytes_per_token,
                     fraction_of_bound=round(decode * bytes_per_token / bandwidth, 3), quality="",
                     note=f"pp512 / tg128, 5 repetitions; bound = copy bandwidth {bandwidth / 1e12:.2f} TB/s / bytes per token")


def _parameters(shape: dict) -> int:
    h, i, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i
    return layers * per_layer + VOCAB * h * (1 if shape["tie_word_embeddings"] else 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("torch", "quality", "gguf"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shape", default="llama-3-8b", choices=list(SHAPES))
    parser.add_argument("--shapes", default="llama-3-8b,llama-3.2-1b")
    parser.add_argument("--configs", default=",".join(TORCH_CONFIGS))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--compile-mode", help="torch.compile mode for the decode step, with fullgraph=True "
                                               "(default: transformers' own compile settings)")
    parser.add_argument("--tiny-llama")
    parser.add_argument("--heldout")
    parser.add_argument("--llama-cpp")
    parser.add_argument("--build")
    parser.add_argument("--work", default="/tmp/gguf-work")
    parser.add_argument("--tokenizer")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    rows = Rows(args.out)
    gpu = gpu_name()
    bandwidth = gpu_memory_bandwidth_bytes_per_s(gibibytes=4)
    log("GPU", gpu, "copy bandwidth", round(bandwidth / 1e12, 3), "TB/s (read + written)")
    if args.part == "torch":
        run_torch(args, rows, gpu, bandwidth)
    elif args.part == "quality":
        run_quality(args, rows, gpu)
    else:
        run_gguf(args, rows, gpu, bandwidth)


if __name__ == "__main__":
    main()
