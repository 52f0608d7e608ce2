"""A language model's next-token log-probabilities on token windows, kept on disk.

Why on disk: at a real vocabulary they do not fit in memory. 32 windows of 128 positions
over Qwen2's 151,936 tokens are 2.5 GB in float32 per model, and a comparison needs two
models' at once. Each runtime worker writes one window at a time (log_softmax in float32);
comparisons read one window of each side at a time and keep only per-position figures
(metrics.compare_logits). llama.cpp's `perplexity --kl-divergence-base` keeps its reference
on disk for the same reason.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_DTYPE = np.dtype("<f4")
_scratch: Path | None = None


@dataclass(frozen=True)
class LogProbs:
    """Float32 log-probabilities [windows, positions, vocab] in a raw file at path (C order,
    shape the file's), sha256 its bytes; rows, when given, the windows of the file this view
    holds (metrics split evaluation windows in halves)."""

    path: Path
    shape: tuple[int, int, int]
    sha256: str
    rows: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return self.shape[0] if self.rows is None else len(self.rows)

    def __getitem__(self, part: np.ndarray) -> LogProbs:
        """Return the view of the windows at indices part (of this view)."""
        mine = range(self.shape[0]) if self.rows is None else self.rows
        return LogProbs(self.path, self.shape, self.sha256, tuple(int(mine[int(i)]) for i in part))

    def window(self, index: int) -> np.ndarray:
        """Return the float32 [positions, vocab] log-probabilities of window index of this view.
        Read with a plain read, not a memory map, so that no page of the file stays resident."""
        row = index if self.rows is None else self.rows[index]
        per_window = self.shape[1] * self.shape[2]
        with open(self.path, "rb") as handle:
            handle.seek(row * per_window * _DTYPE.itemsize)
            values = np.fromfile(handle, _DTYPE, per_window)
        return values.reshape(self.shape[1:])

    def windows(self) -> Iterator[np.ndarray]:
        """Yield each window's log-probabilities in order (window)."""
        for index in range(len(self)):
            yield self.window(index)

    def fingerprint(self) -> str:
        """Return what names these log-probabilities by content: the file's sha256 and the view's rows."""
        return f"{self.sha256}:{self.shape}:{self.rows}"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Return float32 log-probabilities of float logits over the last axis (sums in float64)."""
    shifted = logits.astype(np.float32) - logits.max(axis=-1, keepdims=True).astype(np.float32)
    total = np.sum(np.exp(shifted), axis=-1, keepdims=True, dtype=np.float64)
    return shifted - np.log(total).astype(np.float32)


def write(path: Path, window_logits: Iterable[np.ndarray]) -> LogProbs:
    """Return the LogProbs written to path from each window's logits [positions, vocab] in
    turn (log_softmax), holding one window in memory at a time. Raises ValueError when the
    windows differ in shape or there are none."""
    digest, shape, count = hashlib.sha256(), None, 0
    with open(path, "wb") as handle:
        for logits in window_logits:
            values = np.ascontiguousarray(log_softmax(logits), dtype=_DTYPE)
            if shape is not None and values.shape != shape:
                raise ValueError(f"window {count} has logits of shape {values.shape}, the first {shape}")
            shape = values.shape
            data = values.tobytes()
            digest.update(data)
            handle.write(data)
            count += 1
    if shape is None:
        raise ValueError("no windows to write")
    return LogProbs(path, (count, *shape), digest.hexdigest())


def scratch_file() -> Path:
    """Return a new path for a LogProbs file in this process's scratch folder, which is
    removed when the process exits."""
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix="quantmill-logprobs-"))
        atexit.register(shutil.rmtree, _scratch, True)
    return _scratch / f"{uuid.uuid4().hex}.f32"


def release(outputs: object) -> None:
    """Delete the file of outputs when it is a LogProbs (a model's outputs are read once);
    other outputs are plain arrays and need nothing."""
    if isinstance(outputs, LogProbs):
        outputs.path.unlink(missing_ok=True)
