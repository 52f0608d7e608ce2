"""llama.cpp on this CPU: prompt processing and decode tokens/s, load time, peak memory and
size of each GGUF, each measured in a fresh process; beside them the decode bound from
measured memory bandwidth (bytes read per token / bandwidth) and the fraction reached.

Run as `python -m quantmill.lm_benchmark RUNTIME MODEL PROMPT_TOKENS DECODE_TOKENS`
(RUNTIME: llama.cpp or transformers) it prints one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantmill.benchmark import peak_rss_bytes


@dataclass(frozen=True)
class LMBenchmark:
    """One GGUF on this CPU: load time (ms), prompt processing and decode throughput
    (tokens/s), peak RSS (bytes), file size, bytes of weights read per decoded token, the
    decode bound (tokens/s) at the measured bandwidth, and the fraction of it reached."""

    load_ms: float
    prompt_tokens_per_s: float
    decode_tokens_per_s: float
    peak_rss_bytes: int
    size_bytes: int
    bytes_per_token: int
    decode_bound_tokens_per_s: float
    fraction_of_bound: float

    def headline(self) -> tuple[float, str]:
        """Return the figure the gate compares with the baseline, and its name."""
        return self.decode_tokens_per_s, "decode tokens/s"


def memory_bandwidth_bytes_per_s(megabytes: int = 256, repeats: int = 5) -> float:
    """Return the best measured copy bandwidth of this machine (bytes read + written per s)."""
    source = np.ones(megabytes * (1 << 20) // 8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


def bytes_per_token(gguf_path: Path) -> int:
    """Return the bytes of weights decoding one token reads: every tensor but the token
    embedding table, of which one row is read."""
    from gguf import GGUFReader

    total = 0
    for tensor in GGUFReader(str(gguf_path)).tensors:
        size = int(tensor.n_bytes)
        if tensor.name == "token_embd.weight":
            size //= int(tensor.shape[-1])
        total += size
    return total


def benchmark_gguf(models: dict[str, Path], prompt_tokens: int = 128, decode_tokens: int = 256) -> dict[str, LMBenchmark]:
    """Return an LMBenchmark per labelled GGUF, each measured with llama.cpp in a fresh process.

    Raises RuntimeError with the worker's last error line when a worker fails.
    """
    return _benchmark("llama.cpp", models, prompt_tokens, decode_tokens)


def benchmark_transformers(models: dict[str, Path], prompt_tokens: int = 128, decode_tokens: int = 64) -> dict[str, LMBenchmark]:
    """Return an LMBenchmark per labelled Hugging Face checkpoint (an AWQ one included),
    each measured with transformers on the CPU in a fresh process.

    Raises RuntimeError with the worker's last error line when a worker fails.
    """
    return _benchmark("transformers", models, prompt_tokens, decode_tokens)


def _benchmark(runtime: str, models: dict[str, Path], prompt_tokens: int, decode_tokens: int) -> dict[str, LMBenchmark]:
    bandwidth = memory_bandwidth_bytes_per_s()
    results = {}
    for label, path in models.items():
        done = subprocess.run(
            [sys.executable, "-m", "quantmill.lm_benchmark", runtime, str(path), str(prompt_tokens), str(decode_tokens)],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{runtime} benchmark of {path} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        raw = json.loads(done.stdout.strip().splitlines()[-1])
        per_token = raw.pop("bytes_per_token") if "bytes_per_token" in raw else bytes_per_token(path)
        bound = bandwidth / per_token
        results[label] = LMBenchmark(
            **raw, bytes_per_token=per_token, decode_bound_tokens_per_s=bound,
            fraction_of_bound=raw["decode_tokens_per_s"] / bound,
        )
    return results


def _measure(path: Path, prompt_tokens: int, decode_tokens: int) -> dict:
    from llama_cpp import Llama

    start = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=prompt_tokens + decode_tokens + 8, n_batch=prompt_tokens,
                n_threads=os.cpu_count(), verbose=False)
    load_ms = 1e3 * (time.perf_counter() - start)
    vocab = llm.n_vocab()
    prompt = [1] + [int(t) for t in np.random.default_rng(0).integers(3, vocab, prompt_tokens - 1)]
    llm.eval(prompt[:8])
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    prompt_s = time.perf_counter() - start
    start = time.perf_counter()
    # Decode cost does not depend on which token comes next, so the next token is taken
    # from the same random stream rather than sampled (sampling would need every logit).
    for token in np.random.default_rng(1).integers(3, vocab, decode_tokens):
        llm.eval([int(token)])
    decode_s = time.perf_counter() - start
    return {
        "load_ms": load_ms, "prompt_tokens_per_s": prompt_tokens / prompt_s,
        "decode_tokens_per_s": decode_tokens / decode_s, "peak_rss_bytes": peak_rss_bytes(),
        "size_bytes": path.stat().st_size,
    }


def _measure_transformers(path: Path, prompt_tokens: int, decode_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False).eval()
    load_ms = 1e3 * (time.perf_counter() - start)
    embedding = model.get_input_embeddings().weight
    # Weights as they sit in memory after loading (compressed checkpoints are decompressed),
    # less the embedding table, of which one row is read per token.
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    per_token = weight_bytes - embedding.numel() * embedding.element_size() + embedding.shape[1] * embedding.element_size()
    rng = np.random.default_rng(0)
    prompt = torch.from_numpy(rng.integers(3, embedding.shape[0], (1, prompt_tokens)))
    with torch.no_grad():
        model(input_ids=prompt[:, :8])
        start = time.perf_counter()
        past = model(input_ids=prompt, use_cache=True).past_key_values
        prompt_s = time.perf_counter() - start
        start = time.perf_counter()
        for token in rng.integers(3, embedding.shape[0], decode_tokens):
            past = model(input_ids=torch.tensor([[int(token)]]), past_key_values=past, use_cache=True).past_key_values
        decode_s = time.perf_counter() - start
    return {
        "load_ms": load_ms, "prompt_tokens_per_s": prompt_tokens / prompt_s,
        "decode_tokens_per_s": decode_tokens / decode_s, "peak_rss_bytes": peak_rss_bytes(),
        "size_bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()), "bytes_per_token": per_token,
    }


if __name__ == "__main__":
    measure = _measure if sys.argv[1] == "llama.cpp" else _measure_transformers
    print(json.dumps(measure(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
