"""Where llama.cpp keeps a model's weights on the CPU: in its extra buffer types (weights
repacked into layouts its kernels read faster, and ggml's AMX buffer on CPUs with AMX) or
in plain CPU memory, chosen from the CPU's features. Imports nothing but the standard
library until a model loads, so benchmarks/llama_cpu_buffers.py runs it on a bare machine."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from quantmill.hardware import local_cpu

# llama-cpp-python silences a model load by dup2-ing /dev/null over stdout and stderr and
# restoring what it saw before; two loads in parallel threads would leave /dev/null in
# place for good, so loads take turns.
_LLAMA_LOAD = threading.Lock()


def repack_weights(isa: tuple[str, ...]) -> bool:
    """Return whether llama.cpp may move weights into its extra CPU buffer types on a CPU
    with these features: not where it has AMX-INT8, where ggml's AMX matrix multiply
    (ggml_backend_amx_mul_mat) segfaults on every quantized type at batches of more than a
    few tokens (llama.cpp issue #20824; measured by benchmarks/llama_cpu_buffers.py);
    elsewhere llama.cpp's default (repack)."""
    return "amx_int8" not in isa


@contextlib.contextmanager
def _buffers(repack: bool):
    # llama-cpp-python's Llama takes no use_extra_bufts argument: it builds its
    # llama_model_params from llama_model_default_params(), so that function is wrapped
    # while a model loads (in a worker process of quantmill's own).
    import llama_cpp.llama_cpp as low

    default = low.llama_model_default_params

    def params():
        made = default()
        made.use_extra_bufts = repack
        return made

    low.llama_model_default_params = params
    try:
        yield
    finally:
        low.llama_model_default_params = default


def load(gguf_path: Path, repack: bool | None = None, **kwargs):
    """Return a llama_cpp.Llama of the GGUF at gguf_path, its weights in llama.cpp's extra
    CPU buffer types only where repack_weights allows on this CPU (or as repack says).
    Raises what llama-cpp-python raises (ValueError for a file it cannot load)."""
    from llama_cpp import Llama

    if repack is None:
        repack = repack_weights(local_cpu("llama.cpp").isa)
    with _LLAMA_LOAD, _buffers(repack):
        return Llama(model_path=str(gguf_path), verbose=False, **kwargs)
