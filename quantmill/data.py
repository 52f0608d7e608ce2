"""Calibration and evaluation data: .npz arrays named after the model's inputs (plus
`labels`), or .jsonl lines with a `text` field (and optionally an integer `label`) tokenized by the model's own tokenizer.
Each data set is identified by the sha256 of its file."""

from __future__ import annotations

import json
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quantmill.atomic import atomic_file
from quantmill.errors import InputError
from quantmill.hashing import fingerprint, sha256_file
from quantmill.inspection import TensorSpec

LABELS = "labels"
TEXT_LABEL = "label"
MAX_TOKENS = 128


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples ready to feed a model: arrays keyed by input name, first axis = sample.

    labels: class labels for classification, else None; sha256: of the source file.
    """

    path: Path
    sha256: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    texts: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def fingerprint(self) -> str:
        """Return the sha256 of the samples themselves (a subsample differs from its source
        file, whose sha256 is self.sha256)."""
        return fingerprint((self.inputs, self.labels, self.texts))

    def take(self, index: np.ndarray) -> Dataset:
        """Return the samples at index, keeping this data set's identity."""
        labels = None if self.labels is None else self.labels[index]
        texts = tuple(self.texts[i] for i in index) if self.texts else ()
        return Dataset(self.path, self.sha256, {k: v[index] for k, v in self.inputs.items()}, labels, texts)

    def batches(self, batch_size: int, trim: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Yield feeds of at most batch_size samples; with trim, drop the padding columns
        that no sample of the batch uses."""
        for start in range(0, len(self), batch_size):
            feed = {k: v[start:start + batch_size] for k, v in self.inputs.items()}
            mask = feed.get("attention_mask")
            if trim and mask is not None:
                width = max(int(mask.sum(axis=1).max()), 1)
                feed = {k: v[:, :width] for k, v in feed.items()}
            yield feed


def check_regular_file(path: Path) -> None:
    """Return when path is a regular file (or a link to one). Raises InputError naming path
    when it is missing, a folder, or anything else (a FIFO or a device such as /dev/zero,
    which a read would wait on or never finish)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as err:
        raise InputError(path, f"cannot be read ({err.strerror or err})") from None
    if stat.S_ISDIR(mode):
        raise InputError(path, "is a folder, not a file")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        raise InputError(path, f"is {kind}, not a regular file: quantmill reads only regular files")


def load_dataset(path: Path, inputs: tuple[TensorSpec, ...], tokenizer_dir: Path | None) -> Dataset:
    """Return the data set at path shaped for a model with these inputs.

    Raises InputError naming path when the file is missing, of an unknown kind, empty,
    holds NaN or inf, or its names, shapes or dtypes do not match the model's inputs.
    """
    check_regular_file(path)
    if path.suffix == ".npz":
        dataset = _load_npz(path, inputs)
    elif path.suffix == ".jsonl":
        dataset = _load_jsonl(path, inputs, tokenizer_dir)
    else:
        raise InputError(path, f"unsupported data format {path.suffix!r} (expected .npz or .jsonl)")
    return dataset


def _load_npz(path: Path, inputs: tuple[TensorSpec, ...]) -> Dataset:
    arrays = read_npz(path)
    found = ", ".join(sorted(arrays)) or "none"
    feeds = {}
    for spec in inputs:
        if spec.name not in arrays:
            raise InputError(path, f"no array named {spec.name!r} for model input {spec.name!r} (arrays: {found})")
        feeds[spec.name] = _conform(path, spec, arrays[spec.name])
    counts = {len(a) for a in feeds.values()}
    if len(counts) > 1:
        raise InputError(path, f"inputs have different sample counts {sorted(counts)}")
    labels = arrays.get(LABELS)
    if labels is not None:
        if labels.ndim != 1 or len(labels) != len(next(iter(feeds.values()))):
            raise InputError(path, f"'labels' has shape {labels.shape}; expected one label per sample")
        # A float label would be truncated into some class silently; a negative one is no class.
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(path, f"'labels' are {labels.dtype}; expected integer class indices")
        if len(labels) and labels.min() < 0:
            raise InputError(path, f"'labels' holds a negative class ({int(labels.min())})")
        labels = labels.astype(np.int64)
    return Dataset(path, sha256_file(path), feeds, labels)


def _conform(path: Path, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    if array.ndim != len(spec.shape):
        raise InputError(
            path, f"array {spec.name!r} has shape {array.shape}; model input {spec.name!r} "
            f"expects {_shape_text(spec.shape)}"
        )
    for axis, (have, want) in enumerate(zip(array.shape, spec.shape)):
        if want is not None and axis > 0 and have != want:
            raise InputError(
                path, f"array {spec.name!r} has shape {array.shape}; model input {spec.name!r} "
                f"expects {_shape_text(spec.shape)}"
            )
    if len(array) == 0:
        raise InputError(path, f"array {spec.name!r} is empty (0 samples)")
    want = np.dtype(spec.dtype)
    if array.dtype.kind not in "fiub" or (want.kind in "iu" and array.dtype.kind == "f"):
        raise InputError(path, f"array {spec.name!r} has dtype {array.dtype}; model input expects {want}")
    if array.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(path, f"array {spec.name!r} contains {bad} NaN or inf value(s)")
    return np.ascontiguousarray(array, dtype=want)


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _load_jsonl(path: Path, inputs: tuple[TensorSpec, ...], tokenizer_dir: Path | None) -> Dataset:
    if tokenizer_dir is None:
        raise InputError(path, "text data needs a model with a tokenizer; this model has none")
    texts, labels = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(path, f"line {number} is not JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise InputError(path, f"line {number} has no string field 'text'")
            texts.append(record["text"])
            if TEXT_LABEL in record:
                labels.append(int(record[TEXT_LABEL]))
    if not texts:
        raise InputError(path, "empty: no lines with a 'text' field")
    encoded = _tokenize(texts, tokenizer_dir)
    feeds = {}
    for spec in inputs:
        if spec.name not in encoded:
            raise InputError(path, f"the tokenizer produces no {spec.name!r}, which the model needs")
        feeds[spec.name] = encoded[spec.name].astype(np.dtype(spec.dtype))
    label_array = np.asarray(labels, dtype=np.int64) if len(labels) == len(texts) else None
    return Dataset(path, sha256_file(path), feeds, label_array, tuple(texts))


def _tokenize(texts: list[str], tokenizer_dir: Path) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)
    encoded = tokenizer(texts, padding="longest", truncation=True, max_length=MAX_TOKENS, return_tensors="np")
    return {name: np.asarray(value) for name, value in encoded.items()}


def save_samples(dataset: Dataset, path: Path) -> Path:
    """Write dataset's model inputs (and labels) as an .npz that load_dataset reads back for
    the same model; return path. Written atomically."""
    arrays = dict(dataset.inputs) | ({LABELS: dataset.labels} if dataset.labels is not None else {})
    with atomic_file(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def split_file(path: Path, out_dir: Path, fraction: float = 0.5, seed: int = 0) -> tuple[Path, Path]:
    """Shuffle the samples of an .npz (every array along its first axis) or the lines of a
    .jsonl and write the first fraction and the rest as two files of the same kind in
    out_dir; return (first, rest). Plain text (.txt) is cut, not shuffled, at the line
    boundary nearest the fraction, since its order is its meaning.

    Raises InputError naming path when it is not .npz/.jsonl/.txt, is unreadable, or has
    fewer than two samples (lines).
    """
    if path.suffix == ".npz":
        arrays = read_npz(path)
        count = min((len(a) for a in arrays.values()), default=0)

        def write(tmp: Path, index: np.ndarray) -> None:
            np.savez(tmp, **{name: a[index] for name, a in arrays.items()})
    elif path.suffix == ".jsonl":
        try:
            lines = [line for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(path, f"not readable as text ({err})") from None
        count = len(lines)

        def write(tmp: Path, index: np.ndarray) -> None:
            tmp.write_text("".join(lines[i] + "\n" for i in index))
    elif path.suffix == ".txt":
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(path, f"not readable as text ({err})") from None
        count = len(lines)

        def write(tmp: Path, index: np.ndarray) -> None:
            tmp.write_text("".join(lines[i] for i in index), encoding="utf-8")
    else:
        raise InputError(path, f"unsupported data format {path.suffix!r} (expected .npz, .jsonl or .txt)")
    order = np.arange(count) if path.suffix == ".txt" else np.random.default_rng(seed).permutation(count)
    cut = _cut(path, count, fraction)
    parts = out_dir / f"{path.stem}.part1{path.suffix}", out_dir / f"{path.stem}.part2{path.suffix}"
    for part, index in zip(parts, (order[:cut], order[cut:])):
        with atomic_file(part) as tmp:
            write(tmp, index)
    return parts


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Return the arrays of the .npz at path (never unpickling). Raises InputError naming
    path when it is not a readable archive, or when an array's header declares more bytes
    than the archive holds for it (checked before anything is allocated)."""
    try:
        _check_npz_headers(path)
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(path, f"not a readable .npz archive ({str(err).splitlines()[0]})") from None
    except MemoryError:
        raise InputError(path, "its arrays do not fit in memory") from None


def _check_npz_headers(path: Path) -> None:
    # np.load allocates what a member's header declares before reading it: a few bytes
    # declaring 447 GiB end in MemoryError. The header is read alone first.
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(member)
                if dtype.hasobject:
                    raise ValueError(f"array {info.filename!r} holds Python objects, which are never unpickled")
                declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                if declared > info.file_size:
                    raise InputError(path, f"array {info.filename!r} declares shape {shape} of {dtype} ({declared:,} "
                                           f"bytes), but the archive holds {info.file_size:,} bytes for it")


# Far above any model's config.json (a few KB), far below what a read of it could exhaust.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def read_config(path: Path) -> dict:
    """Return the JSON object in the small configuration file at path (a model's
    config.json). Raises InputError naming path when it is not a regular file, is larger
    than MAX_CONFIG_BYTES, or is not a JSON object."""
    check_regular_file(path)
    with open(path, "rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(path, f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB: not a model configuration")
    try:
        config = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(path, f"not valid JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise InputError(path, f"holds a JSON {type(config).__name__}, not an object")
    return config


def _cut(path: Path, count: int, fraction: float) -> int:
    if count < 2:
        raise InputError(path, f"{count} sample(s); at least 2 are needed to split")
    return min(max(1, round(count * fraction)), count - 1)
