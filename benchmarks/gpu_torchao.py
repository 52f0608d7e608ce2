"""torchao's own decode recipe on one NVIDIA GPU, at batch 1: a Llama-3-8B-shaped model
(random weights, the real 128,256-token vocabulary; speed depends on shapes, not values)
written as gpt-fast / torchao's `_models/llama` write it, with a static KV cache, and its
decode step compiled whole (`fullgraph=True`) in a mode with CUDA graphs; quantized with
torchao's `quantize_` to INT4 weight-only (group 64, tinygemm's tile-packed layout), INT8
weight-only, FP8 weight-only and FP8 dynamic (per-row), as torchao's published table for
Llama-3.1-8B on an H100 does. BF16 is measured first and again last, so drift shows.

Each configuration: a fresh model, quantized, its decode step compiled, 2 warm-up
generations, then --reps generations of --tokens tokens after an 8-token prompt, each timed
alone (decode only, CUDA-synchronized). A ratio to BF16 is the geometric mean of the
repetitions' tokens/s over BF16's (both BF16 runs), with a 95% interval (Welch's t on the
logarithms: repetitions of two configurations are not paired); a configuration beats BF16
only where the whole interval is above 1. The fraction of the bound is decode tokens/s x
bytes read per token (weights but the embedding table, and the KV cache up to the mean
position) over the GPU's measured copy bandwidth (quantmill.measure).

    python3 benchmarks/gpu_torchao.py --out DIR [--mode reduce-overhead|max-autotune] [--configs ...]

The published figures it aims at (torchao's README, Llama-3.1-8B, H100, batch 1, compiled):
BF16 132.4 tok/s, INT4WO-64 268.9 (2.03x), INT8WO 216.4 (1.63x), FP8WO 213.9 (1.62x),
FP8DQ per-row 167.1 (1.26x). Prints one JSON line per configuration and writes
DIR/torchao.json. benchmarks/gpu_worker.sh torchao runs it on the device.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu import gpu_name, ratio_interval  # noqa: E402

from quantmill.measure import gpu_memory_bandwidth_bytes_per_s  # noqa: E402

DIM, LAYERS, HEADS, KV_HEADS, HIDDEN, VOCAB = 4096, 32, 32, 8, 14336, 128256
HEAD_DIM = DIM // HEADS
PROMPT = 8
CONFIGS = ("bf16", "int4-wo-64", "int8-wo", "fp8-wo", "fp8-dq-row", "bf16-again")
PUBLISHED = {"int4-wo-64": 2.03, "int8-wo": 1.63, "fp8-wo": 1.62, "fp8-dq-row": 1.26}
GOAL = {"int4-wo-64": 2.0, "int8-wo": 1.6, "fp8-wo": 1.6}


class KVCache(nn.Module):
    def __init__(self, length: int):
        super().__init__()
        shape = (1, KV_HEADS, length, HEAD_DIM)
        self.register_buffer("k", torch.zeros(shape, dtype=torch.bfloat16))
        self.register_buffer("v", torch.zeros(shape, dtype=torch.bfloat16))

    def update(self, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k[:, :, pos] = k
        self.v[:, :, pos] = v
        return self.k, self.v


def rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    freqs = freqs.view(1, pairs.size(1), 1, pairs.size(3), 2)
    out = torch.stack([pairs[..., 0] * freqs[..., 0] - pairs[..., 1] * freqs[..., 1],
                       pairs[..., 1] * freqs[..., 0] + pairs[..., 0] * freqs[..., 1]], -1)
    return out.flatten(3).type_as(x)


class Block(nn.Module):
    def __init__(self, length: int):
        super().__init__()
        self.wqkv = nn.Linear(DIM, (HEADS + 2 * KV_HEADS) * HEAD_DIM, bias=False)
        self.wo = nn.Linear(DIM, DIM, bias=False)
        self.w1 = nn.Linear(DIM, HIDDEN, bias=False)
        self.w3 = nn.Linear(DIM, HIDDEN, bias=False)
        self.w2 = nn.Linear(HIDDEN, DIM, bias=False)
        self.attention_norm = nn.RMSNorm(DIM, eps=1e-5)
        self.ffn_norm = nn.RMSNorm(DIM, eps=1e-5)
        self.cache = KVCache(length)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.wqkv(self.attention_norm(x)).split([DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
        q = rope(q.view(b, s, HEADS, HEAD_DIM), freqs).transpose(1, 2)
        k = rope(k.view(b, s, KV_HEADS, HEAD_DIM), freqs).transpose(1, 2)
        k, v = self.cache.update(pos, k, v.view(b, s, KV_HEADS, HEAD_DIM).transpose(1, 2))
        k = k.repeat_interleave(HEADS // KV_HEADS, dim=1)
        v = v.repeat_interleave(HEADS // KV_HEADS, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, s, DIM)
        h = x + self.wo(y)
        n = self.ffn_norm(h)
        return h + self.w2(F.silu(self.w1(n)) * self.w3(n))


class Llama(nn.Module):
    def __init__(self, length: int):
        super().__init__()
        self.tok_embeddings = nn.Embedding(VOCAB, DIM)
        self.layers = nn.ModuleList(Block(length) for _ in range(LAYERS))
        self.norm = nn.RMSNorm(DIM, eps=1e-5)
        self.output = nn.Linear(DIM, VOCAB, bias=False)
        inv = 1.0 / (500000.0 ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM))
        angles = torch.outer(torch.arange(length).float(), inv)
        self.register_buffer("freqs", torch.stack([angles.cos(), angles.sin()], -1).to(torch.bfloat16))
        self.register_buffer("causal", torch.tril(torch.ones(length, length, dtype=torch.bool)))

    def forward(self, idx: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        mask = self.causal[None, None, pos]
        freqs = self.freqs[pos]
        x = self.tok_embeddings(idx)
        for layer in self.layers:
            x = layer(x, freqs, mask, pos)
        return self.output(self.norm(x))


def make_model(length: int) -> Llama:
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Llama(length).to(torch.bfloat16)
    for p in model.parameters():
        nn.init.normal_(p, std=0.02)
    return model.eval().requires_grad_(False)


def config_for(name: str):
    """Return torchao's config for name (None for BF16)."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Float8WeightOnlyConfig,
        Int4WeightOnlyConfig,
        Int8WeightOnlyConfig,
        PerRow,
    )

    return {
        "bf16": None, "bf16-again": None,
        "int4-wo-64": Int4WeightOnlyConfig(group_size=64, int4_packing_format="tile_packed_to_4d"),
        "int8-wo": Int8WeightOnlyConfig(),
        "fp8-wo": Float8WeightOnlyConfig(),
        "fp8-dq-row": Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
    }[name]


def step(model: Llama, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    return torch.argmax(model(token, pos)[:, -1], dim=-1, keepdim=True)


@torch.inference_mode()
def generate(model: Llama, decode, tokens: int) -> float:
    """Return the decode tokens/s of one generation of tokens after an 8-token prompt."""
    prompt = torch.arange(1, PROMPT + 1, device="cuda")[None]
    # Positions made on the GPU beforehand: a host-to-device copy per token would stall.
    positions = torch.arange(PROMPT, PROMPT + tokens, device="cuda")
    with sdpa_kernel(SDPBackend.MATH):
        token = step(model, prompt, torch.arange(PROMPT, device="cuda"))
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(tokens):
            # CUDA graphs reuse their output buffers: the token is copied out before the next replay.
            token = decode(token, positions[i:i + 1]).clone()
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - start)


def measure(name: str, mode: str, tokens: int, reps: int) -> dict:
    from torchao.quantization import quantize_

    torch._dynamo.reset()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    model = make_model(PROMPT + tokens + 8)
    caches = sum(b.numel() * b.element_size() for n, b in model.named_buffers() if ".cache." in n)
    config = config_for(name)
    if config is not None:
        quantize_(model, config)
    torch.cuda.synchronize()
    weights = torch.cuda.memory_allocated() - before - caches
    started = time.perf_counter()
    decode = torch.compile(functools.partial(step, model), mode=mode, fullgraph=True)
    warm = [generate(model, decode, tokens) for _ in range(2)]
    compile_s = time.perf_counter() - started
    runs = [generate(model, decode, tokens) for _ in range(reps)]
    embedding = VOCAB * DIM * 2
    kv_read = 2 * LAYERS * KV_HEADS * HEAD_DIM * 2 * (PROMPT + tokens // 2)
    per_token = weights - embedding + DIM * 2 + kv_read
    del model, decode
    return {"config": name, "runs": [round(r, 2) for r in runs], "warmup": [round(w, 2) for w in warm],
            "median": round(float(np.median(runs)), 2), "weights_bytes": int(weights), "bytes_per_token": int(per_token),
            "compile_and_warmup_s": round(compile_s, 1), "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mode", default="max-autotune", choices=("reduce-overhead", "max-autotune"))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # torchao's generate.py sets these for its published figures.
    torch._inductor.config.coordinate_descent_tuning = True
    torch._inductor.config.triton.unique_kernel_names = True
    torch._inductor.config.fx_graph_cache = True
    import torchao

    bandwidth = gpu_memory_bandwidth_bytes_per_s()
    result = {"date": date.today().isoformat(), "gpu": gpu_name(), "torch": torch.__version__,
              "torchao": torchao.__version__, "mode": args.mode, "fullgraph": True, "tokens": args.tokens,
              "bandwidth_bytes_per_s": bandwidth, "shape": "Llama-3-8B (random weights, vocabulary 128256)",
              "configs": {}}
    for name in args.configs.split(","):
        try:
            measured = measure(name, args.mode, args.tokens, args.reps)
        except Exception as err:  # a config that fails to quantize or compile is reported, and the others go on
            measured = {"config": name, "error": f"{type(err).__name__}: {err}"[:600]}
        if "median" in measured:
            measured["fraction_of_bound"] = round(measured["median"] * measured["bytes_per_token"] / bandwidth, 3)
        result["configs"][name] = measured
        print(json.dumps(measured), flush=True)
        (args.out / "torchao.json").write_text(json.dumps(result, indent=1))
    base = [r for n in ("bf16", "bf16-again") for r in result["configs"].get(n, {}).get("runs", [])]
    summary = {}
    for name, measured in result["configs"].items():
        if name.startswith("bf16") or "runs" not in measured or len(base) < 2:
            continue
        ratio, low, high = ratio_interval(measured["runs"], base)
        verdict = "faster" if low > 1 else "slower" if high < 1 else "within the noise"
        summary[name] = {"ratio": round(ratio, 3), "ci95": [round(low, 3), round(high, 3)], "verdict": verdict,
                         "published": PUBLISHED.get(name), "goal": GOAL.get(name),
                         "goal_met": None if name not in GOAL else bool(low > 1 and ratio >= GOAL[name])}
    result["vs_bf16"] = summary
    print(json.dumps({"vs_bf16": summary}), flush=True)
    (args.out / "torchao.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
