"""Decoder LMs against their full-precision original on held-out text: perplexity of each,
top-1 next-token agreement, and mean KL divergence from the full-precision distribution,
all on the same token windows."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np

from quantmill.data import Dataset
from quantmill.errors import InputError
from quantmill.evaluation import Evaluation
from quantmill.hashing import sha256_file

WINDOW = 128
# llama-cpp-python silences a model load by dup2-ing /dev/null over stdout and stderr and
# restoring what it saw before; two loads in parallel threads (the flow evaluates formats
# concurrently) would leave /dev/null in place for good, so loads take turns.
_LLAMA_LOAD = threading.Lock()


# No tokenizer here averages more than this many characters per token, so a prefix this
# long per wanted token is enough text to tokenize.
_CHARS_PER_TOKEN = 16


def token_windows(model_dir: Path, text_path: Path, windows: int, window: int = WINDOW) -> np.ndarray:
    """Return up to `windows` consecutive windows of window+1 token ids of text_path,
    tokenized with model_dir's own tokenizer, each starting with BOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    text = text_path.read_text(encoding="utf-8")[: windows * window * _CHARS_PER_TOKEN]
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    count = min(windows, len(ids) // window)
    rows = [np.concatenate([[tokenizer.bos_token_id], ids[i * window:(i + 1) * window]]) for i in range(count)]
    return np.stack(rows) if rows else np.zeros((0, window + 1), dtype=np.int64)


def text_dataset(model_dir: Path, text_path: Path, windows: int) -> Dataset:
    """Return text_path's token windows as a Dataset (input `input_ids`), identified by the
    sha256 of the file, for calibration checks. Raises InputError for a missing or empty file."""
    if not text_path.is_file():
        raise InputError(text_path, "no such file")
    rows = token_windows(model_dir, text_path, windows)
    if len(rows) == 0:
        raise InputError(text_path, f"too little text: fewer than {WINDOW + 1} tokens")
    return Dataset(text_path, sha256_file(text_path), {"input_ids": rows})


def torch_logits(model_dir: Path, windows: np.ndarray) -> np.ndarray:
    """Return float32 logits [windows, positions, vocab] of the safetensors model in model_dir."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False).eval()
    with torch.no_grad():
        return np.stack([model(input_ids=torch.from_numpy(w[None, :-1])).logits[0].float().numpy() for w in windows])


def llama_cpp_logits(gguf_path: Path, windows: np.ndarray) -> np.ndarray:
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


def compare(reference: np.ndarray, candidate: np.ndarray, windows: np.ndarray) -> Evaluation:
    """Return the Evaluation of candidate logits against reference logits on windows.

    The gate metric is the relative perplexity increase in percent, carried in
    accuracy_drop; baseline_metric and quantized_metric are the two perplexities.
    """
    targets = windows[:, 1:]
    ref_logp, cand_logp = _log_softmax(reference), _log_softmax(candidate)
    base_ppl, cand_ppl = _perplexity(ref_logp, targets), _perplexity(cand_logp, targets)
    kl = np.sum(np.exp(ref_logp) * (ref_logp - cand_logp), axis=-1)
    agreement = np.mean(reference.argmax(-1) == candidate.argmax(-1))
    per_window_kl = kl.mean(axis=1)
    worst = tuple(
        {"window": int(i), "mean_kl": round(float(per_window_kl[i]), 5)} for i in np.argsort(-per_window_kl)[:10]
    )
    return Evaluation(
        "perplexity", base_ppl, cand_ppl, 100.0 * (cand_ppl / base_ppl - 1.0),
        secondary={"top1_agreement": 100.0 * float(agreement), "mean_kl": float(kl.mean()), "tokens": float(targets.size)},
        worst=worst,
    )


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _perplexity(log_probs: np.ndarray, targets: np.ndarray) -> float:
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return math.exp(-float(picked.mean()))
