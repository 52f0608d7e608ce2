"""llama.cpp through llama-cpp-python: a GGUF's logits on token windows (the evaluation
runner) and its prompt and decode speed (the benchmark).

Run as `python -m quantmill.runtimes.llama_cpp MODEL PROMPT_TOKENS DECODE_TOKENS` it prints
one JSON object with the measurements of one model.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from quantmill.measure import peak_rss_bytes
from quantmill.runtimes.decode import DecodeRuntime

DECODE_TOKENS = 256
# llama-cpp-python silences a model load by dup2-ing /dev/null over stdout and stderr and
# restoring what it saw before; two loads in parallel threads would leave /dev/null in
# place for good, so loads take turns.
_LLAMA_LOAD = threading.Lock()


def logits(gguf_path: Path, windows: np.ndarray) -> np.ndarray:
    """Return float32 logits [windows, positions, vocab] of the GGUF model, through llama.cpp."""
    from llama_cpp import Llama

    positions = windows.shape[1] - 1
    with _LLAMA_LOAD:
        llm = Llama(model_path=str(gguf_path), n_ctx=positions, n_batch=positions, logits_all=True, verbose=False)
    out = []
    for window in windows:
        llm.reset()
        llm.eval(window[:-1].tolist())
        out.append(np.array(llm.scores[:positions], dtype=np.float32))
    return np.stack(out)


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


class LlamaCpp(DecodeRuntime):
    """llama.cpp on this worker's CPU."""

    name = "llama.cpp"
    module = __name__
    decode_tokens = DECODE_TOKENS

    def logits(self, path: Path, windows: np.ndarray) -> np.ndarray:
        """Return the GGUF's logits through llama.cpp (logits)."""
        return logits(path, windows)

    def unavailable(self, target: str) -> str | None:
        """Return why llama.cpp cannot run on target here, or None."""
        reason = super().unavailable(target)
        if reason is not None:
            return reason
        try:
            import llama_cpp  # noqa: F401
        except ImportError as err:
            return f"llama-cpp-python is not installed ({err})"
        return None

    def describe(self, target: str) -> str:
        """Return e.g. 'llama.cpp via llama-cpp-python 0.3.36'."""
        return f"llama.cpp via llama-cpp-python {version('llama-cpp-python')}"


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
        "size_bytes": path.stat().st_size, "bytes_per_token": bytes_per_token(path),
    }


if __name__ == "__main__":
    print(json.dumps(_measure(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
