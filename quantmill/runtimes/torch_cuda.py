"""PyTorch on an NVIDIA GPU, run as torchao's own recipe runs it: a safetensors checkpoint
(full precision, or quantized by torchao and saved by transformers) loaded by transformers
onto the GPU in BF16; its logits on token windows (the evaluation runner), and its prompt and
decode speed at batch 1 with a static KV cache and the decode step compiled whole
(`fullgraph=True`) into CUDA graphs, as torchao's `_models/llama/generate.py` measures its
published figures.

Why not transformers' `generate`: on an H200 it ran torchao's INT4 and FP8 at 0.49-0.58x
BF16, while the compiled static-cache step runs them faster than BF16 (issue 22).

Run as `python -m quantmill.runtimes.torch_cuda MODEL PROMPT_TOKENS DECODE_TOKENS` it prints
one JSON object with the measurements of one model.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from quantmill.isolation import in_worker
from quantmill.logprobs import LogProbs, scratch_file, write
from quantmill.measure import peak_rss_bytes
from quantmill.runtimes.decode import DecodeRuntime
from quantmill.targets import Target

# As llama-bench's tg128: a decode long enough that the per-step launch cost is amortized.
DECODE_TOKENS = 128
# torchao's generate.py compiles with "max-autotune", which also captures CUDA graphs but first
# tunes Triton kernels for minutes per model, in every fresh process a benchmark round starts;
# "reduce-overhead" captures the same graphs without the tuning. INT8 weight-only needs the
# tuning to gain (1.44x BF16 with it, 0.994x without, H100 2026-12-06), so on the gpu target it
# steps aside in benchmark_tables/decoder_lm_gpu.csv.
COMPILE_MODE = "reduce-overhead"
# Generations before the timed one: the first compiles, the second records the CUDA graphs.
WARMUPS = 2


def load(model_dir: Path, device: str = "cuda"):
    """Return the safetensors causal LM in model_dir on device (the GPU), in eval mode, in
    BF16 (a torchao-quantized checkpoint's quantized weights as torchao's tensors). Raises
    what transformers raises for a checkpoint it cannot load."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False,
                                                dtype=torch.bfloat16, device_map=device).eval()


def window_logits(model_dir: Path, windows: np.ndarray, device: str = "cuda") -> Iterator[np.ndarray]:
    """Yield each window's float32 logits [positions, vocab] of the model run on device (the GPU;
    torchao's INT8 and FP8 weight-only also run on the CPU)."""
    import torch

    model = load(model_dir, device)
    with torch.inference_mode():
        for window in windows:
            ids = torch.from_numpy(window[None, :-1]).to(device)
            yield model(input_ids=ids).logits[0].float().cpu().numpy()


def logits(model_dir: Path, windows: np.ndarray) -> np.ndarray:
    """Return float32 logits [windows, positions, vocab] of the model (window_logits)."""
    return np.stack(list(window_logits(model_dir, windows)))


def log_probs(model_dir: Path, windows: np.ndarray, out: Path, device: str = "cuda") -> LogProbs:
    """Return the model's log-probabilities on windows, run on device, written to out a window at a time."""
    return write(out, window_logits(model_dir, windows, device))


def bytes_per_token(model) -> int:
    """Return the bytes of weights one decoded token reads: every parameter as stored on the
    GPU (torchao's packed data and scales included) but the input embedding table, of which
    one row is read, unless the output layer reads the same table (tied weights)."""
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    stored = sum(_stored_bytes(p) for p in model.parameters())
    if output is not None and output.weight is embedding:
        return stored
    row = embedding.shape[1] * embedding.element_size()
    return stored - _stored_bytes(embedding) + row


def _stored_bytes(tensor) -> int:
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    # A torchao tensor reports its logical shape and dtype; what it stores on the GPU is the
    # plain tensors it flattens into (packed integers, scales, zero points).
    if is_traceable_wrapper_subclass(tensor):
        names, _ = tensor.__tensor_flatten__()
        parts = (getattr(tensor, name) for name in names)
        return sum(_stored_bytes(part) for part in parts if part is not None)
    return tensor.numel() * tensor.element_size()


def measure(model_dir: Path, prompt_tokens: int, decode_tokens: int, device: str = "cuda") -> dict:
    """Return one measurement of the model on device (the GPU; the CPU runs the same compiled
    step without CUDA graphs): load_ms, prompt_tokens_per_s (eager prefill),
    decode_tokens_per_s (the compiled step, after WARMUPS generations), peak_rss_bytes (this
    process), peak_gpu_bytes, size_bytes, bytes_per_token and compile_s (the warm-up
    generations)."""
    import torch
    from torchao.utils import unwrap_tensor_subclass
    from transformers import StaticCache

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    # torchao's generate.py turns this on for its published figures.
    torch._inductor.config.coordinate_descent_tuning = True
    started = time.perf_counter()
    model = load(model_dir, device)
    sync()
    load_ms = 1e3 * (time.perf_counter() - started)
    stored = bytes_per_token(model)
    # The compiled step would flatten every torchao tensor into its data and scales on the CPU
    # at each call, which cost FP8 a third of its decode on the Llama-3.2-1B shape (H100,
    # benchmarks/results/torchao-diagnose-h100-2026-12-06); parametrized by torchao's own
    # unwrap, the graph takes the plain tensors. BF16's plain weights are left as they are.
    unwrap_tensor_subclass(model.requires_grad_(False))
    vocab = model.get_input_embeddings().weight.shape[0]
    cache = StaticCache(config=model.config, max_cache_len=prompt_tokens + decode_tokens + 1)
    rng = np.random.default_rng(0)
    prompt = torch.from_numpy(rng.integers(3, vocab, (1, prompt_tokens))).to(device)
    positions = torch.arange(prompt_tokens + decode_tokens, device=device)

    def step(tokens, where):
        logits = model(input_ids=tokens, past_key_values=cache, cache_position=where, use_cache=True).logits
        return torch.argmax(logits[:, -1], dim=-1, keepdim=True)

    decode = torch.compile(step, mode=COMPILE_MODE, fullgraph=True)

    def generate() -> tuple[float, float]:
        cache.reset()
        sync()
        start = time.perf_counter()
        token = step(prompt, positions[:prompt_tokens])
        sync()
        prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(prompt_tokens, prompt_tokens + decode_tokens):
            # A CUDA graph reuses its output buffer: the token is copied out before the next replay.
            token = decode(token, positions[i:i + 1]).clone()
        sync()
        return prefill_s, time.perf_counter() - start

    with torch.inference_mode():
        started = time.perf_counter()
        for _ in range(WARMUPS):
            generate()
        compile_s = time.perf_counter() - started
        prefill_s, decode_s = generate()
    return {
        "load_ms": load_ms, "prompt_tokens_per_s": prompt_tokens / prefill_s,
        "decode_tokens_per_s": decode_tokens / decode_s, "peak_rss_bytes": peak_rss_bytes(),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else 0, "compile_s": compile_s,
        "size_bytes": sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file()),
        "bytes_per_token": stored,
    }


class TorchCuda(DecodeRuntime):
    """PyTorch (with torchao's kernels for its formats) on this worker's NVIDIA GPU."""

    name = "torch-cuda"
    module = __name__
    decode_tokens = DECODE_TOKENS

    def logits(self, path: Path, windows: np.ndarray) -> np.ndarray:
        """Return the checkpoint's logits on the GPU, computed in this runtime's worker process."""
        return in_worker(self.name, f"PyTorch on CUDA evaluating {path.name}", logits, path, windows)

    def log_probs(self, path: Path, windows: np.ndarray) -> LogProbs:
        """Return the checkpoint's log-probabilities on windows (log_probs) in a scratch file,
        computed on the GPU in this runtime's worker process."""
        return in_worker(self.name, f"PyTorch on CUDA evaluating {path.name}", log_probs, path, windows, scratch_file())

    def unavailable(self, target: Target) -> str | None:
        """Return why PyTorch cannot run models on target's GPU here, or None: the target must
        offer this runtime, torchao and transformers be installed, and PyTorch find a CUDA
        device."""
        if not target.offers(self.name):
            return f"target {target.name!r} does not offer {self.name}"
        for package in ("torchao", "transformers"):
            if importlib.util.find_spec(package) is None:
                return f"{package} is not installed"
        import torch

        # Safe to ask here: the processes that run models are started afresh, not forked
        # from this one, so CUDA initialized here cannot break theirs.
        if torch.cuda.device_count() == 0:
            return f"PyTorch {torch.__version__} finds no CUDA device (CUDA {torch.version.cuda or 'not built in'})"
        return None

    def describe(self, target: Target) -> str:
        """Return e.g. 'PyTorch 2.11.0+cu130, torchao 0.18.0, transformers 5.17.0; decode compiled
        (reduce-overhead, CUDA graphs, static KV cache)'."""
        return (f"PyTorch {_version('torch')}, torchao {_version('torchao')}, transformers {_version('transformers')}; "
                f"decode compiled ({COMPILE_MODE}, CUDA graphs, static KV cache)")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
