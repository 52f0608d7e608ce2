"""llama.cpp's converter (convert_hf_to_gguf.py) as make unpacks it: where it is, and which
Hugging Face architectures it converts, read from its source so that a model it cannot take
is refused before any work starts."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from quantmill.errors import FormatUnavailable

CONVERTER_ENV = "QUANTMILL_LLAMA_CPP_SRC"
_REGISTERED = re.compile(r"@ModelBase\.register\(([^)]*)\)")
_NAME = re.compile(r"""["']([A-Za-z0-9_]+)["']""")


def llama_cpp_source() -> Path:
    """Return the llama.cpp source tree holding convert_hf_to_gguf.py and gguf-py.

    Raises FormatUnavailable when it has not been unpacked (see the Makefile).
    """
    root = Path(os.environ.get(CONVERTER_ENV, Path(__file__).resolve().parents[1] / ".quantmill" / "llama.cpp"))
    if not (root / "convert_hf_to_gguf.py").is_file():
        raise FormatUnavailable(f"llama.cpp's converter is not at {root}/convert_hf_to_gguf.py (run `make llama-src`)")
    return root


def converter_architectures() -> frozenset[str]:
    """Return the Hugging Face architecture names llama.cpp's converter registers a class
    for. Raises FormatUnavailable without the converter."""
    return _registered(llama_cpp_source())


@lru_cache(maxsize=4)
def _registered(root: Path) -> frozenset[str]:
    # Read, not imported: importing the converter loads torch and its model code.
    names = set()
    for path in [root / "convert_hf_to_gguf.py", *sorted((root / "conversion").glob("*.py"))]:
        for arguments in _REGISTERED.findall(path.read_text(encoding="utf-8")):
            names.update(_NAME.findall(arguments))
    return frozenset(names)
