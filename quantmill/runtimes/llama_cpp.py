"""llama.cpp through llama-cpp-python: a GGUF's logits on token windows (the evaluation
runner) and its prompt and decode speed (the benchmark), on the CPU or, where this worker's
llama.cpp is built with a GPU backend (CUDA), with every layer offloaded to the GPU.

Run as `python -m quantmill.runtimes.llama_cpp MODEL PROMPT_TOKENS DECODE_TOKENS [TARGET [REPACK]]`
(REPACK: auto, on or off) it prints one JSON object with the measurements of one model.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from quantmill.hardware import local_cpu
from quantmill.isolation import WorkerCrashed, in_worker
from quantmill.llama_buffers import after_crash, load, repack_weights
from quantmill.logprobs import LogProbs, scratch_file, write
from quantmill.measure import peak_rss_bytes
from quantmill.runtimes.decode import DecodeRuntime
from quantmill.targets import HOST, Target, get_target

DECODE_TOKENS = 256


def window_logits(gguf_path: Path, windows: np.ndarray, repack: bool | None = None) -> Iterator[np.ndarray]:
    """Yield each window's float32 logits [positions, vocab] of the GGUF model, through
    llama.cpp (its extra CPU buffer types as repack says, by default as llama_buffers chooses)."""
    positions = windows.shape[1] - 1
    llm = load(gguf_path, repack, n_ctx=positions, n_batch=positions, logits_all=True)
    for window in windows:
        llm.reset()
        llm.eval(window[:-1].tolist())
        yield np.array(llm.scores[:positions], dtype=np.float32)


def logits(gguf_path: Path, windows: np.ndarray, repack: bool | None = None) -> np.ndarray:
    """Return float32 logits [windows, positions, vocab] of the GGUF model (window_logits)."""
    return np.stack(list(window_logits(gguf_path, windows, repack)))


def log_probs(gguf_path: Path, windows: np.ndarray, repack: bool | None = None, *, out: Path) -> LogProbs:
    """Return the GGUF model's log-probabilities on windows, written to out a window at a time."""
    return write(out, window_logits(gguf_path, windows, repack))


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
    """llama.cpp on this worker's CPU, or on its GPU with every layer offloaded."""

    name = "llama.cpp"
    module = __name__
    decode_tokens = DECODE_TOKENS
    # llama.cpp built with CUDA crashed loading a model (SIGSEGV) in any process that had
    # imported numpy before llama.cpp's library, on the H200 (2026-11-29; not with the
    # library loaded first, nor with the CPU build): the benchmark worker loads it first.
    # llama-cpp-python issue #1581 reports the same with pandas imported first.
    preload = ("llama_cpp",)

    def logits(self, path: Path, windows: np.ndarray) -> np.ndarray:
        """Return the GGUF's logits through llama.cpp (logits), computed in this runtime's
        worker process (quantmill.isolation). A crash there with the extra CPU buffer types on
        an AMX CPU is tried once more without them (llama_buffers.after_crash); otherwise it
        raises WorkerCrashed."""
        return self._in_worker(logits, path, windows)

    def log_probs(self, path: Path, windows: np.ndarray) -> LogProbs:
        """Return the GGUF's log-probabilities on windows (log_probs), in a scratch file
        (logprobs.scratch_file), computed as logits() is."""
        return self._in_worker(log_probs, path, windows, out=scratch_file())

    def _in_worker(self, fn: Callable, path: Path, windows: np.ndarray, **kwargs):
        isa = local_cpu(self.name).isa
        try:
            return in_worker(self.name, f"llama.cpp evaluating {path.name}", fn, path, windows,
                             repack_weights(isa), preload=self.preload, **kwargs)
        except WorkerCrashed:
            if not after_crash(isa):
                raise
        return in_worker(self.name, f"llama.cpp evaluating {path.name} without repacked weights", fn, path, windows,
                         False, preload=self.preload, **kwargs)

    def unavailable(self, target: Target) -> str | None:
        """Return why llama.cpp cannot run on target here, or None: a target that offloads
        layers to a GPU needs a library built with a GPU backend."""
        if not target.offers(self.name):
            return f"target {target.name!r} does not offer llama.cpp"
        try:
            import llama_cpp
        except (ImportError, OSError) as err:
            return f"llama-cpp-python is not installed or its library does not load ({err})"
        if target.llama_gpu_layers and not llama_cpp.llama_supports_gpu_offload():
            return (f"llama-cpp-python {llama_cpp.__version__} on this worker is built without a GPU backend "
                    "(install it with CMAKE_ARGS=-DGGML_CUDA=on, or set LLAMA_CPP_LIB_PATH to a CUDA build of its llama.cpp)")
        return None

    def describe(self, target: Target) -> str:
        """Return e.g. 'llama.cpp via llama-cpp-python 0.3.36', with 'all layers on the GPU'
        where target offloads every layer."""
        import llama_cpp

        layers = target.llama_gpu_layers
        where = "" if not layers else ", all layers on the GPU" if layers < 0 else f", {layers} layers on the GPU"
        return f"llama.cpp via llama-cpp-python {llama_cpp.__version__}{where}"


def _measure(path: Path, prompt_tokens: int, decode_tokens: int, target: str = HOST.name, repack: str = "auto") -> dict:
    start = time.perf_counter()
    llm = load(path, None if repack == "auto" else repack == "on", n_ctx=prompt_tokens + decode_tokens + 8,
               n_batch=prompt_tokens, n_threads=os.cpu_count(), n_gpu_layers=get_target(target).llama_gpu_layers)
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
    print(json.dumps(_measure(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:6])))
