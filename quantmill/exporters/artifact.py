"""Publish a quantized model (a file, or a checkpoint folder): the files, a metadata JSON beside it and its
sha256, written to a temporary folder and moved into place whole."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from quantmill.atomic import PUBLISHED_DIR_MODE, PUBLISHED_FILE_MODE, atomic_dir
from quantmill.errors import InputError
from quantmill.hashing import sha256_file, sha256_files, sha256_tree

METADATA_FILE = "metadata.json"


class ArtifactChanged(InputError):
    """An artifact whose bytes are not those its report states."""


@dataclass(frozen=True)
class ExportedArtifact:
    """A published artifact: its folder, model file, sha256 and size in bytes."""

    directory: Path
    path: Path
    sha256: str
    size_bytes: int


def export_artifact(model: Path, files: tuple[Path, ...], destination: Path, metadata: dict) -> ExportedArtifact:
    """Publish model (a file, or a checkpoint folder whose artifact is files) into the
    folder destination as model<suffix> (or model/), with metadata.json and
    model<suffix>.sha256 (for a folder, the sha256 over its files, each prefixed by its
    relative path).

    An existing destination is replaced only once the new folder is complete, so readers
    see the old artifact or the new one, never a mix. Raises OSError on I/O failure.
    """
    with atomic_dir(destination) as staging:
        filename = "model" if model.is_dir() else f"model{model.suffix}"
        target = staging / filename
        if model.is_dir():
            for source in files:
                copied = target / source.relative_to(model)
                copied.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copied)
            written = [target / f.relative_to(model) for f in files]
            digest, size = sha256_files(written, target), sum(f.stat().st_size for f in written)
        else:
            shutil.copyfile(model, target)
            digest, size = sha256_file(target), target.stat().st_size
        full = {**metadata, "file": filename, "sha256": digest, "size_bytes": size}
        (staging / METADATA_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        (staging / f"{filename}.sha256").write_text(f"{digest}  {filename}\n")
        _fsync_dir(staging)
        for item in staging.rglob("*"):
            os.chmod(item, PUBLISHED_DIR_MODE if item.is_dir() else PUBLISHED_FILE_MODE)
    return ExportedArtifact(destination, destination / filename, digest, size)


def verify_artifact(path: Path, sha256: str) -> None:
    """Raise ArtifactChanged naming path when the file or folder there no longer has the
    sha256 the report states (another run wrote over it, or it was tampered with)."""
    found = sha256_tree(path) if path.exists() else "missing"
    if found != sha256:
        raise ArtifactChanged(path, f"sha256 {found[:12]} differs from the reported {sha256[:12]}; nothing published")


def _fsync_dir(directory: Path) -> None:
    for item in directory.rglob("*"):
        if item.is_file():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
