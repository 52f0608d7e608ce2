"""llama.cpp's own quality measure of a quantized GGUF, `llama-perplexity --kl-divergence`,
run as its program: the figures the llama.cpp community reports (perplexity, KL divergence
from a base model's next-token distribution, same-top-token rate), on the token chunks it
cuts from a text. quantmill's own comparison (metrics.compare_logits, scoring the same
positions with `context`) is checked against it, and benchmarks print both.

How llama-perplexity reads a text: it tokenizes the whole file (BOS first where the vocabulary
adds one), cuts it into chunks of n_ctx tokens, puts BOS in place of each chunk's first token,
and scores the second half of each chunk (positions n_ctx/2 to n_ctx-2, each predicting the
next token). The base run keeps those tokens and the base model's log-probabilities (16-bit,
truncated 16 nats below the top) in one file, which the comparing run reads.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantmill.atomic import atomic_file
from quantmill.formats.gguf import run_model_tool
from quantmill.llama_tools import llama_tools
from quantmill.models.gguf_input import tokenize

PROGRAM = "llama-perplexity"
_MAGIC = b"_logits_"


@dataclass(frozen=True)
class KlBase:
    """A base model's log-probabilities as llama-perplexity wrote them (--kl-divergence-base)
    at path, and the token chunks it scored, BOS put in as it does: [chunks, n_ctx]."""

    path: Path
    chunks: np.ndarray

    @property
    def context(self) -> int:
        """Return the positions of each chunk that are context only (llama-perplexity's first)."""
        return self.chunks.shape[1] // 2


@dataclass(frozen=True)
class LlamaKld:
    """llama-perplexity's figures for one GGUF against a KlBase: the two perplexities, KL
    divergence in nats (mean, median, 99th percentile) and the same-top-token rate (percent)."""

    perplexity: float
    base_perplexity: float
    mean_kld: float
    median_kld: float
    p99_kld: float
    same_top: float


def write_base(gguf: Path, text: Path, n_ctx: int, chunks: int, out: Path) -> KlBase:
    """Run llama-perplexity on gguf over the first `chunks` chunks of n_ctx tokens of text,
    keeping its log-probabilities at out; return the KlBase. Raises FormatUnavailable without
    the program, WorkerCrashed when it fails, ValueError when the text has fewer chunks."""
    with atomic_file(out) as tmp:
        _run(gguf, text, n_ctx, chunks, "--kl-divergence-base", str(tmp))
    base = read_base(out, gguf)
    if len(base.chunks) < chunks:
        raise ValueError(f"{text}: {len(base.chunks)} chunks of {n_ctx} tokens, not {chunks}, for {PROGRAM}")
    return base


def read_base(path: Path, gguf: Path) -> KlBase:
    """Return the KlBase in path (written by llama-perplexity for gguf, whose vocabulary says
    whether BOS starts each chunk). Raises ValueError for a file that is not one."""
    with open(path, "rb") as handle:
        if handle.read(len(_MAGIC)) != _MAGIC:
            raise ValueError(f"{path}: not llama-perplexity's log-probabilities")
        n_ctx, _vocab, n_chunk = (int(v) for v in np.fromfile(handle, "<i4", 3))
        chunks = np.fromfile(handle, "<i4", n_ctx * n_chunk).astype(np.int64).reshape(n_chunk, n_ctx)
    _, bos = tokenize(gguf, "")
    if bos is not None:
        chunks[:, 0] = bos
    return KlBase(path, chunks)


def kl_divergence(gguf: Path, base: KlBase) -> LlamaKld:
    """Return llama-perplexity's figures for gguf against base, on base's chunks. Raises
    FormatUnavailable without the program, WorkerCrashed when it fails."""
    output = _run(gguf, None, base.chunks.shape[1], len(base.chunks), "--kl-divergence-base", str(base.path),
                  "--kl-divergence")
    return parse_kl_divergence(output, str(gguf))


def parse_kl_divergence(output: str, what: str) -> LlamaKld:
    """Return the figures in the output of `llama-perplexity --kl-divergence` (of what).
    Raises ValueError naming what when a figure is missing."""

    def figure(label: str) -> float:
        found = re.search(rf"^{re.escape(label)}\s*:\s*(-?[0-9.]+)", output, re.MULTILINE)
        if found is None:
            raise ValueError(f"{PROGRAM} printed no '{label}' for {what}:\n{output[-2000:]}")
        return float(found.group(1))

    return LlamaKld(figure("Mean PPL(Q)"), figure("Mean PPL(base)"), figure("Mean    KLD"), figure("Median  KLD"),
                    figure("99.0%   KLD"), figure("Same top p"))


def _run(gguf: Path, text: Path | None, n_ctx: int, chunks: int, *flags: str) -> str:
    program = llama_tools(PROGRAM) / PROGRAM
    command = [str(program), "-m", str(gguf), "-c", str(n_ctx), "-b", str(n_ctx), "--chunks", str(chunks),
               "-t", str(os.cpu_count() or 1), *(["-f", str(text)] if text else []), *flags]
    return run_model_tool(command, f"{PROGRAM} on {gguf}")
