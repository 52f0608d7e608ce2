"""Formats that crash for real, one stage each, for the tests of crash containment: a real
signal delivered to the real worker process that quantizes, evaluates or benchmarks.

Each is ONNX dynamic INT8 (a real artifact) but for one stage, where the process doing the
work sends itself SIGSEGV after a line on its stderr, as a crashing kernel would.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np

from quantmill.data import Dataset
from quantmill.formats import gguf
from quantmill.formats.base import CONSERVATIVE
from quantmill.formats.gguf import Gguf
from quantmill.formats.onnx import OnnxDynamic
from quantmill.isolation import in_worker, run_command
from quantmill.runtimes.onnxruntime import OnnxRuntime

LAST_WORDS = "crashing on purpose in"
CRASH = f"import os, signal, sys; print('{LAST_WORDS} a benchmark', file=sys.stderr, flush=True); os.kill(os.getpid(), signal.SIGSEGV)"


def segfault(stage: str) -> None:
    """Print LAST_WORDS and the stage on stderr, then die of SIGSEGV."""
    print(f"{LAST_WORDS} {stage}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)


class CrashInQuantize(OnnxDynamic):
    name = "crash-in-quantize"
    safety = CONSERVATIVE

    def quantize(self, model, options, calibration, workdir, progress=None) -> Path:
        segfault("quantize")


def _crashing_outputs(path: Path, dataset: Dataset) -> np.ndarray:
    return in_worker("onnxruntime", f"evaluating {path.name}", segfault, "evaluate")


class CrashInEvaluate(OnnxDynamic):
    name = "crash-in-evaluate"
    safety = CONSERVATIVE

    def evaluation_runner(self):
        return _crashing_outputs


class CrashInBenchmark(OnnxDynamic):
    name = "crash-in-benchmark"
    safety = CONSERVATIVE


class CrashingOnnxRuntime(OnnxRuntime):
    """ONNX Runtime, but the benchmark process of a crash-in-benchmark artifact dies of SIGSEGV."""

    def benchmark(self, models, data, target, seconds, pair=None, objective="throughput", progress=None):
        crashing = {label for label, path in models.items() if CrashInBenchmark.name in str(path)}
        fine = {label: path for label, path in models.items() if label not in crashing}
        measured = super().benchmark(fine, data, target, seconds, pair if pair and not set(pair) & crashing else None,
                                     objective, progress)
        for label in crashing:
            try:
                run_command([sys.executable, "-c", CRASH], f"onnxruntime benchmark of {Path(models[label]).name}", 60)
            except Exception as err:  # the harness's own record of a crashed measuring process
                measured[label] = err
        return measured


def crash_formats() -> dict:
    """Return the crashing formats by name, to put before the real ones."""
    return {f.name: f for f in (CrashInQuantize(), CrashInEvaluate(), CrashInBenchmark())}


def install() -> None:
    """Put the crashing formats first in the registry and the crashing runtime in place of
    onnxruntime's, in this process (for a CLI run in a subprocess)."""
    import quantmill.formats as formats
    from quantmill.runtimes import RUNTIMES

    formats.FORMATS = {**crash_formats(), **formats.FORMATS}
    RUNTIMES["onnxruntime"] = CrashingOnnxRuntime()


class UnknownFtypeGguf(Gguf):
    """GGUF Q4_K_M, but its plain rung asks llama.cpp's quantizer for an ftype it does not
    know: a real refusal, in the quantize worker (the importance-matrix rung goes through
    llama-quantize, which knows Q4_K_M by name)."""

    def quantize(self, model, options, calibration, workdir, progress=None) -> Path:
        if options.imatrix or options.tensor_types:
            return super().quantize(model, options, calibration, workdir, progress)
        known = gguf.FTYPES["Q4_K_M"]
        gguf.FTYPES["Q4_K_M"] = 9999
        try:
            return super().quantize(model, options, calibration, workdir, progress)
        finally:
            gguf.FTYPES["Q4_K_M"] = known
