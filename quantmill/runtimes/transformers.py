"""PyTorch through transformers: a safetensors checkpoint's logits on token windows (the
evaluation runner, and the full-precision reference) and its prompt and decode speed.

Run as `python -m quantmill.runtimes.transformers MODEL PROMPT_TOKENS DECODE_TOKENS` it
prints one JSON object with the measurements of one model.
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib.metadata import version
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from quantmill.isolation import in_worker
from quantmill.logprobs import LogProbs, scratch_file, write
from quantmill.measure import peak_rss_bytes
from quantmill.metrics import window_log_perplexity
from quantmill.runtimes.decode import DecodeRuntime
from quantmill.targets import Target

DECODE_TOKENS = 64


def window_logits(model_dir: Path, windows: np.ndarray) -> Iterator[np.ndarray]:
    """Yield each window's float32 logits [positions, vocab] of the safetensors model in
    model_dir, computed in float32 whatever dtype the checkpoint stores (transformers 5
    would otherwise compute a float16 checkpoint in float16: the reference is full precision)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False,
                                                 dtype=torch.float32).eval()
    with torch.no_grad():
        for window in windows:
            yield model(input_ids=torch.from_numpy(window[None, :-1])).logits[0].float().numpy()


def logits(model_dir: Path, windows: np.ndarray) -> np.ndarray:
    """Return float32 logits [windows, positions, vocab] of the model in model_dir (window_logits)."""
    return np.stack(list(window_logits(model_dir, windows)))


def log_probs(model_dir: Path, windows: np.ndarray, out: Path) -> LogProbs:
    """Return the model's log-probabilities on windows, written to out a window at a time."""
    return write(out, window_logits(model_dir, windows))


def window_nll(model_dir: Path, windows: np.ndarray) -> np.ndarray:
    """Return each window's mean negative log-likelihood under the model, a window at a time."""
    return window_log_perplexity(window_logits(model_dir, windows), windows)


class Transformers(DecodeRuntime):
    """transformers with PyTorch on this worker's CPU."""

    name = "transformers"
    module = __name__
    decode_tokens = DECODE_TOKENS

    def logits(self, path: Path, windows: np.ndarray) -> np.ndarray:
        """Return the checkpoint's logits through transformers (logits), computed in this
        runtime's worker process (quantmill.isolation): a crash there raises WorkerCrashed."""
        return in_worker(self.name, f"transformers evaluating {path.name}", logits, path, windows)

    def log_probs(self, path: Path, windows: np.ndarray) -> LogProbs:
        """Return the checkpoint's log-probabilities on windows (log_probs) in a scratch file
        (logprobs.scratch_file), computed in this runtime's worker process."""
        return in_worker(self.name, f"transformers evaluating {path.name}", log_probs, path, windows, scratch_file())

    def window_nll(self, path: Path, windows: np.ndarray) -> np.ndarray:
        """Return each window's mean negative log-likelihood under the checkpoint (window_nll),
        computed in this runtime's worker process."""
        return in_worker(self.name, f"transformers scoring windows with {path.name}", window_nll, path, windows)

    def describe(self, target: Target) -> str:
        """Return e.g. 'transformers 5.17.0 (torch 2.13.0)'."""
        return f"transformers {version('transformers')} (torch {version('torch')})"


def _measure(path: Path, prompt_tokens: int, decode_tokens: int) -> dict:
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
    print(json.dumps(_measure(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
