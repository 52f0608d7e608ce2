"""Where llama.cpp's own programs are (llama-quantize, llama-imatrix, llama-perplexity,
llama-bench): built by the Makefile from the pinned llama-cpp-python's tree into a cache
outside the clone and linked at .quantmill/llama-tools, or wherever QUANTMILL_LLAMA_TOOLS
names (a GPU worker's CUDA build: benchmarks/gpu_worker.sh)."""

from __future__ import annotations

import os
from pathlib import Path

from quantmill.errors import FormatUnavailable

TOOLS_ENV = "QUANTMILL_LLAMA_TOOLS"


def llama_tools(*programs: str) -> Path:
    """Return the folder holding llama.cpp's programs (by default llama-imatrix and
    llama-quantize; else those named).

    Raises FormatUnavailable when they have not been built (see the Makefile).
    """
    root = Path(os.environ.get(TOOLS_ENV, Path(__file__).resolve().parents[1] / ".quantmill" / "llama-tools"))
    for program in programs or ("llama-imatrix", "llama-quantize"):
        if not os.access(root / program, os.X_OK):
            raise FormatUnavailable(f"llama.cpp's {program} is not at {root}/{program} (run `make llama-tools`)")
    return root
