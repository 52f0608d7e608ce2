"""A small Llama-architecture language model trained here on real text: the Python
standard library's own source, tokenized by a SentencePiece model trained on the same files.
Saved as a Hugging Face directory (safetensors, config, tokenizer.model) that llama.cpp's
converter and transformers both read."""

from __future__ import annotations

import json
import math
import os
import shutil
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from quantmill.progress import terminal_line

VOCAB = 4096
SEQUENCE = 128
BATCH = 16
# Held-out perplexity is measured on the first windows of the held-out split (32k tokens).
HELDOUT_WINDOWS = 256
# Every weight dimension is a multiple of 256 so llama.cpp's k-quants apply to every tensor.
CONFIG = {
    "vocab_size": VOCAB, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}


@dataclass(frozen=True)
class TinyLlama:
    """The trained model directory, its text splits, and held-out perplexities: the model's
    and a unigram model's fitted on the training tokens (the baseline to beat)."""

    model_dir: Path
    train_text: Path
    heldout_text: Path
    heldout_perplexity: float
    unigram_perplexity: float
    train_seconds: float


def stdlib_corpus(every: int = 10) -> tuple[str, str]:
    """Return (training text, held-out text): top-level stdlib modules in sorted order, every
    `every`-th file held out, so the two splits share no file."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py") if not p.name.startswith("_"))
    train, heldout = [], []
    for index, path in enumerate(files):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        (heldout if index % every == 0 else train).append(text)
    return "\n".join(train), "\n".join(heldout)


def build_tiny_llama(directory: Path, steps: int = 300, seed: int = 0) -> TinyLlama:
    """Train (seeded) and save the model under directory, or reuse a finished one there.

    Returns its paths and perplexities. Raises ModuleNotFoundError without sentencepiece.
    """
    model_dir = directory / "tiny-llama"
    summary = directory / "tiny-llama.json"
    if summary.exists() and (model_dir / "model.safetensors").exists():
        return TinyLlama(**{k: Path(v) if k.endswith(("_dir", "_text")) else v for k, v in json.loads(summary.read_text()).items()})
    directory.mkdir(parents=True, exist_ok=True)
    train_text, heldout_text = stdlib_corpus()
    train_path, heldout_path = directory / "train.txt", directory / "heldout.txt"
    train_path.write_text(train_text, encoding="utf-8")
    heldout_path.write_text(heldout_text, encoding="utf-8")

    staging = Path(tempfile.mkdtemp(prefix=".tiny-llama.", dir=directory))
    try:
        processor = _train_tokenizer(train_path, staging)
        train_ids = np.asarray(processor.encode(train_text), dtype=np.int64)
        heldout_ids = np.asarray(processor.encode(heldout_text), dtype=np.int64)
        start = time.perf_counter()
        model = _train(train_ids, steps, seed)
        seconds = time.perf_counter() - start
        model.save_pretrained(staging, safe_serialization=True)
        (staging / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "add_bos_token": True, "add_eos_token": False, "model_max_length": CONFIG["max_position_embeddings"],
        }))
        perplexity = heldout_perplexity(model, heldout_ids)
        unigram = _unigram_perplexity(train_ids, heldout_ids)
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result = TinyLlama(model_dir, train_path, heldout_path, perplexity, unigram, seconds)
    summary.write_text(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}))
    return result


def _train_tokenizer(train_path: Path, out: Path):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=str(train_path), model_prefix=str(out / "tokenizer"), vocab_size=VOCAB, model_type="bpe",
        byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", input_sentence_size=200_000, shuffle_input_sentence=True,
        max_sentence_length=8192, num_threads=os.cpu_count() or 1, minloglevel=2,
    )
    (out / "tokenizer.vocab").unlink(missing_ok=True)
    return spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))


def _train(ids: np.ndarray, steps: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    progress = terminal_line("training the tiny Llama: steps")
    for step in range(steps):
        starts = rng.integers(0, len(ids) - SEQUENCE - 1, BATCH)
        batch = torch.from_numpy(np.stack([ids[s:s + SEQUENCE] for s in starts]))
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        progress(step + 1, steps)
    return model.eval()


def heldout_perplexity(model, ids: np.ndarray, window: int = SEQUENCE) -> float:
    """Return exp(mean next-token negative log-likelihood) of model over the first
    HELDOUT_WINDOWS windows of ids."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, min(len(ids) - window, HELDOUT_WINDOWS * window), window):
            chunk = torch.from_numpy(ids[start:start + window + 1])[None]
            logits = model(input_ids=chunk[:, :-1]).logits
            nll = torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
            total, count = total + float(nll), count + window
    return math.exp(total / count)


def _unigram_perplexity(train: np.ndarray, heldout: np.ndarray) -> float:
    counts = np.bincount(train, minlength=VOCAB).astype(np.float64) + 1.0
    probabilities = counts / counts.sum()
    return float(np.exp(-np.mean(np.log(probabilities[heldout]))))
