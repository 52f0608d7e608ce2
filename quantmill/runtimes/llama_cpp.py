"""llama.cpp: a GGUF's logits on token windows through llama-cpp-python (the evaluation
runner), and its prompt and decode speed timed in C++ by llama.cpp's own llama-bench (the
benchmark), on the CPU or, where this worker's llama-bench is built with a GPU backend
(CUDA), with every layer offloaded to the GPU.

Why llama-bench and not a loop over llama-cpp-python's eval: one Python call per token cost
about 0.7 ms a token on an H100, 13-26 % of an 8B model's F16 decode, and narrowed every
ratio (issue 22); llama-bench times the whole prompt and the whole decode natively, and is
the figure llama.cpp's community compares.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from quantmill.errors import FormatUnavailable
from quantmill.hardware import local_cpu
from quantmill.isolation import WorkerCrashed, WorkerTimeout, in_worker, run_command, run_measured
from quantmill.llama_buffers import after_crash, load, repack_weights
from quantmill.llama_tools import TOOLS_ENV, llama_tools
from quantmill.logprobs import LogProbs, scratch_file, write
from quantmill.runtimes.decode import PROMPT_TOKENS, WORKER_TIMEOUT_S, DecodeRuntime
from quantmill.targets import Target

# llama-bench's tg128, the decode figure llama.cpp's community reports.
DECODE_TOKENS = 128
BENCH = "llama-bench"
# llama-bench's progress lines on stderr (--progress), which time the model's load.
PROGRESS = "llama-bench:"
# -ngl for "every layer": more than any model has.
ALL_LAYERS = 999


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
    embedding table, of which one row is read, unless the output layer is that table (a model
    with tied embeddings has no output.weight, and llama.cpp's output reads the whole table)."""
    from gguf import GGUFReader

    tensors = GGUFReader(str(gguf_path)).tensors
    tied = all(tensor.name != "output.weight" for tensor in tensors)
    total = 0
    for tensor in tensors:
        size = int(tensor.n_bytes)
        if tensor.name == "token_embd.weight" and not tied:
            size //= int(tensor.shape[-1])
        total += size
    return total


class LlamaCpp(DecodeRuntime):
    """llama.cpp on this worker's CPU, or on its GPU with every layer offloaded."""

    name = "llama.cpp"
    decode_tokens = DECODE_TOKENS
    # llama.cpp built with CUDA crashed loading a model (SIGSEGV) in any process that had
    # imported numpy before llama.cpp's library, on the H200 (2026-11-29; not with the
    # library loaded first, nor with the CPU build): evaluation workers load it first.
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

    def measure_once(self, path: Path, prompt_tokens: int, decode_tokens: int, target: Target) -> dict:
        """Return one llama-bench measurement of the GGUF at path on target (bench_once),
        with the CPU buffer types quantmill's own loads use; where that crashes on an AMX
        CPU, once more without the extra ones (llama_buffers.after_crash). Raises
        WorkerCrashed or WorkerTimeout when llama-bench fails."""
        isa = local_cpu(self.name).isa
        try:
            return bench_once(path, prompt_tokens, decode_tokens, target, repack_weights(isa))
        except WorkerCrashed:
            if not after_crash(isa):
                raise
        return bench_once(path, prompt_tokens, decode_tokens, target, False)

    def unavailable(self, target: Target) -> str | None:
        """Return why llama.cpp cannot run on target here, or None: llama-cpp-python must
        load (evaluation) and llama-bench be built (benchmarks), with a GPU backend where
        target offloads layers to a GPU."""
        if not target.offers(self.name):
            return f"target {target.name!r} does not offer llama.cpp"
        # Evaluation (llama-cpp-python) runs on the host only. On a GPU worker, loading its CUDA
        # libllama before PyTorch aborted the process (free(): invalid pointer; H100, 2026-12-06),
        # and a GPU target only benchmarks, with llama-bench.
        if not target.llama_gpu_layers:
            try:
                import llama_cpp  # noqa: F401
            except (ImportError, OSError) as err:
                return f"llama-cpp-python is not installed or its library does not load ({err})"
        try:
            program = llama_tools(BENCH) / BENCH
        except FormatUnavailable as err:
            return str(err)
        if target.llama_gpu_layers and not gpu_devices(program):
            return (f"{program} lists no GPU (`{BENCH} --list-devices`): it is built without a GPU backend "
                    "(build llama.cpp with -DGGML_CUDA=ON, as benchmarks/gpu_worker.sh does, and point "
                    f"{TOOLS_ENV} at it)")
        return None

    def describe(self, target: Target) -> str:
        """Return e.g. "llama.cpp's llama-bench (llama-cpp-python 0.3.36's tree): pp128 and
        tg128 timed in C++, a fresh process per model and round", with 'all layers on the GPU'
        where target offloads every layer."""
        layers = target.llama_gpu_layers
        where = "" if not layers else ", all layers on the GPU" if layers < 0 else f", {layers} layers on the GPU"
        return (f"llama.cpp's {BENCH}: pp{PROMPT_TOKENS} and tg{DECODE_TOKENS} timed in C++, a fresh process per "
                f"model and round{where}")


def bench_once(path: Path, prompt_tokens: int, decode_tokens: int, target: Target, repack: bool) -> dict:
    """Return one run of llama-bench on the GGUF at path: a prompt of prompt_tokens, then
    decode_tokens decoded, each timed once after llama-bench's warm-up, all layers on the
    GPU where target offloads them, llama.cpp's extra CPU buffer types as repack says. The
    dict has load_ms (model load and context, between llama-bench's progress lines),
    prompt_tokens_per_s and decode_tokens_per_s as llama-bench timed them, its peak RSS,
    the file's size and bytes_per_token. Raises FormatUnavailable without llama-bench,
    WorkerCrashed when it fails, WorkerTimeout past WORKER_TIMEOUT_S."""
    program = llama_tools(BENCH) / BENCH
    layers = target.llama_gpu_layers
    command = [str(program), "-m", str(path), "-p", str(prompt_tokens), "-n", str(decode_tokens), "-r", "1",
               "-t", str(os.cpu_count() or 1), "-ngl", str(ALL_LAYERS if layers < 0 else layers),
               "--repack", str(int(repack)), "-o", "json", "--progress"]
    run = run_measured(command, f"{BENCH} of {path.name}", WORKER_TIMEOUT_S, PROGRESS)
    speeds = {"decode" if test["n_gen"] else "prompt": float(test["avg_ts"]) for test in json.loads(run.stdout)}
    started = next(t for line, t in run.marks.items() if line.endswith("starting"))
    ready = next(t for line, t in run.marks.items() if "warmup" in line)
    return {
        "load_ms": 1e3 * (ready - started), "prompt_tokens_per_s": speeds["prompt"],
        "decode_tokens_per_s": speeds["decode"], "peak_rss_bytes": run.peak_rss_bytes,
        "size_bytes": path.stat().st_size, "bytes_per_token": bytes_per_token(path),
    }


def gpu_devices(program: Path) -> list[str]:
    """Return the GPUs llama.cpp's program (a llama-bench) lists (`--list-devices`), e.g.
    ['CUDA0: NVIDIA H100 80GB HBM3 (81090 MiB, 80520 MiB free)']; none for a CPU-only build."""
    try:
        listed = run_command([str(program), "--list-devices"], f"{program.name} --list-devices", 120, merge_stderr=True)
    except (WorkerCrashed, WorkerTimeout):
        return []
    return [line.strip() for line in listed.splitlines() if re.match(r"\s+\w+\d+: ", line)]
