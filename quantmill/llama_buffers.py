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


# Whether a load with the extra buffer types crashed in this process's llama.cpp.
_REPACK_CRASHED = threading.Event()


def repack_weights(isa: tuple[str, ...]) -> bool:
    """Return whether llama.cpp should move weights into its extra CPU buffer types (its
    repacked layouts; ggml's AMX buffer on a CPU with AMX-INT8): the fastest configuration
    wherever it is correct, and llama.cpp's default. On the GPU machine's 16-core AMX Xeon
    it evaluated every type correctly and made prompt processing up to 1.68x faster (Q8_0;
    benchmarks/llama_cpu_buffers.py), while on a 2-core AMX Xeon ggml's AMX matrix multiply
    segfaulted on every quantized type (llama.cpp issue #20824). The CPU's features cannot
    tell the two apart, so the buffers stay on until a crash on an AMX CPU says otherwise
    (after_crash), and off from then on in this process."""
    return not ("amx_int8" in isa and _REPACK_CRASHED.is_set())


def after_crash(isa: tuple[str, ...]) -> bool:
    """Record that a llama.cpp process crashed with the extra buffer types on; return
    whether to try again without them: on a CPU with AMX-INT8, the first time."""
    if "amx_int8" not in isa or _REPACK_CRASHED.is_set():
        return False
    _REPACK_CRASHED.set()
    return True


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
