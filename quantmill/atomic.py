"""Files and folders appear whole or not at all: written beside their destination, then renamed onto it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PUBLISHED_FILE_MODE, PUBLISHED_DIR_MODE = 0o644, 0o755


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path in path's folder (same suffix); when the block succeeds, rename
    it onto path, readable by all (0644), otherwise delete it. Readers of path never see a
    partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file 0600; workers under another user on a shared volume read it.
        os.chmod(tmp, PUBLISHED_FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside path; when the block succeeds, make it readable by all
    (0755) and rename it onto path, otherwise delete it. What was at path is moved aside
    first and deleted after, so readers see the old folder or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        # mkdtemp makes the folder 0700; workers under another user on a shared volume read it.
        os.chmod(staging, PUBLISHED_DIR_MODE)
        if path.exists():
            # A name of its own: two writers replacing one destination never share it.
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, retired)
            os.replace(staging, path)
            shutil.rmtree(retired)
        else:
            os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
