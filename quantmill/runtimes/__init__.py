"""The runtimes quantmill runs models in. Each runtime gives a format its evaluation runner
(`outputs(path, dataset)`: what the task metric compares) and its benchmark runner
(`benchmark(models, data, target, seconds)`), says whether it can run on a target here
(`unavailable(target)`), and names the measurement type it returns. Targets offer runtimes
by name (quantmill/targets.py)."""

from __future__ import annotations

from quantmill.runtimes.llama_cpp import LlamaCpp
from quantmill.runtimes.onnxruntime import OnnxRuntime
from quantmill.runtimes.torch_cuda import TorchCuda
from quantmill.runtimes.transformers import Transformers

RUNTIMES = {r.name: r for r in (OnnxRuntime(), LlamaCpp(), Transformers(), TorchCuda())}


def get_runtime(name: str):
    """Return the runtime called name. Raises KeyError for an unknown one."""
    return RUNTIMES[name]
