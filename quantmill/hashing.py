"""Content fingerprints: every model and data set is identified by the sha256 of its bytes."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of one file's bytes. Raises OSError if it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_files(paths: Iterable[Path], root: Path) -> str:
    """Return one sha256 over several files, each prefixed by its path relative to root,
    so renaming a shard changes the fingerprint. Raises OSError if a file cannot be read."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def sha256_tree(path: Path) -> str:
    """Return the sha256 of a file, or of every file under a folder (sha256_files).
    Raises OSError if something cannot be read."""
    if path.is_dir():
        return sha256_files((p for p in path.rglob("*") if p.is_file()), path)
    stat = path.stat()
    return _sha256_unchanged(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


# Cache keys hash the same model file once per task call; a file is re-read only when its
# size or modification time changes.
@lru_cache(maxsize=256)
def _sha256_unchanged(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def fingerprint(value: object) -> str:
    """Return a sha256 naming value by content: files and folders by their bytes, arrays by
    dtype, shape and bytes, objects with a fingerprint() method by it, dataclasses by their
    fields, containers element by element, other values by repr.

    Raises OSError if a path cannot be read.
    """
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest, value: object) -> None:
    digest.update(type(value).__name__.encode())
    if isinstance(value, Path):
        digest.update(sha256_tree(value).encode() if value.exists() else b"missing:" + str(value).encode())
    elif isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes() if array.dtype.kind != "O" else repr(array.tolist()).encode())
    elif hasattr(value, "fingerprint") and callable(value.fingerprint):
        digest.update(value.fingerprint().encode())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            digest.update(item.name.encode())
            _feed(digest, getattr(value, item.name))
    elif isinstance(value, dict):
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(str(len(value)).encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(repr(value).encode())
