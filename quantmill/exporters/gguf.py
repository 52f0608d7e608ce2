"""GGUF for llama.cpp: llama.cpp's own converter (Hugging Face directory -> F16 GGUF) and its
own quantizer (llama_model_quantize, through llama-cpp-python) for Q8_0 and Q4_K_M.

The converter script is not installed by any wheel: `make` unpacks it, with the gguf-py it
was written against, from the llama-cpp-python source distribution pinned in
constraints.txt, so converter and quantizer come from one llama.cpp tree.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

from quantmill.atomic import atomic_file
from quantmill.errors import QuantmillError

# ftype numbers from llama.h (LLAMA_FTYPE_MOSTLY_*).
FTYPES = {"Q8_0": 7, "Q4_K_M": 15}
SCHEMES = {"gguf-q8_0": "Q8_0", "gguf-q4_k_m": "Q4_K_M"}
CONVERTER_ENV = "QUANTMILL_LLAMA_CPP_SRC"


class FormatUnavailable(QuantmillError):
    """A format that cannot be produced on this machine, with the reason."""


def llama_cpp_source() -> Path:
    """Return the llama.cpp source tree holding convert_hf_to_gguf.py and gguf-py.

    Raises FormatUnavailable when it has not been unpacked (see the Makefile).
    """
    root = Path(os.environ.get(CONVERTER_ENV, Path(__file__).resolve().parents[2] / ".quantmill" / "llama.cpp"))
    if not (root / "convert_hf_to_gguf.py").is_file():
        raise FormatUnavailable(f"llama.cpp's converter is not at {root}/convert_hf_to_gguf.py (run `make llama-src`)")
    return root


def convert_to_gguf(model_dir: Path, out_path: Path) -> Path:
    """Convert the Hugging Face directory model_dir to an F16 GGUF at out_path (atomically).

    Raises FormatUnavailable without the converter; RuntimeError with the converter's last
    error line when it fails.
    """
    source = llama_cpp_source()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source / "gguf-py"), os.environ.get("PYTHONPATH", "")])}
    with atomic_file(out_path) as tmp:
        done = subprocess.run(
            [sys.executable, str(source / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(tmp), "--outtype", "f16"],
            capture_output=True, text=True, env=env, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"convert_hf_to_gguf.py failed on {model_dir}: {_last_line(done.stderr)}")
    return out_path


def quantize_gguf(f16_path: Path, out_path: Path, scheme: str) -> Path:
    """Quantize the GGUF at f16_path to scheme (Q8_0 or Q4_K_M) at out_path with llama.cpp's
    quantizer; return out_path. Raises FormatUnavailable without llama-cpp-python,
    ValueError for an unknown scheme, RuntimeError when llama.cpp reports failure."""
    if scheme not in FTYPES:
        raise ValueError(f"unknown GGUF scheme {scheme!r}; known: {', '.join(FTYPES)}")
    try:
        import llama_cpp
    except ImportError as err:
        raise FormatUnavailable(f"llama-cpp-python is not installed ({err})") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[scheme]
    params.nthread = os.cpu_count() or 1
    with atomic_file(out_path) as tmp:
        status = llama_cpp.llama_model_quantize(str(f16_path).encode(), str(tmp).encode(), ctypes.byref(params))
        if status != 0:
            raise RuntimeError(f"llama_model_quantize({f16_path}, {scheme}) returned {status}")
    return out_path


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:400] if lines else "no output"
