"""Tasks for decoder language models: resolve, tokenize, convert to GGUF, quantize with
llama.cpp, evaluate against the full-precision model, benchmark with llama.cpp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import task

from quantmill.data import Dataset
from quantmill.evaluation import Evaluation
from quantmill.exporters.gguf import SCHEMES, convert_to_gguf, quantize_gguf
from quantmill.lm_benchmark import LMBenchmark, benchmark_gguf, benchmark_transformers
from quantmill.lm_evaluation import compare, llama_cpp_logits, text_dataset, torch_logits
from quantmill.lm_sources import LanguageModelRef, resolve_language_model
from quantmill.quantizers.awq import quantize_awq
from tasks.policy import EPHEMERAL, cached, retried


@task(name="resolve-language-model", **retried(), **EPHEMERAL)
def resolve_language_model_task(uri: str, workdir: Path) -> LanguageModelRef:
    """Return the fingerprinted LanguageModelRef for uri."""
    return resolve_language_model(uri, workdir)


@task(name="tokenize-text", **EPHEMERAL)
def text_dataset_task(model: LanguageModelRef, path: Path, windows: int) -> Dataset:
    """Return the text file's token windows as a Dataset."""
    return text_dataset(model.model_dir, path, windows)


@task(name="convert-to-gguf", timeout_seconds=1800, **EPHEMERAL)
def convert_gguf_task(model: LanguageModelRef, out_path: Path) -> Path:
    """Return the F16 GGUF written by llama.cpp's converter."""
    return convert_to_gguf(model.model_dir, out_path)


@task(name="reference-logits", timeout_seconds=1800, **EPHEMERAL)
def reference_logits_task(model: LanguageModelRef, windows: np.ndarray) -> np.ndarray:
    """Return the full-precision (safetensors, PyTorch) logits on the evaluation windows."""
    return torch_logits(model.model_dir, windows)


# The tasks below run in worker threads (.submit), where Prefect cannot enforce a timeout.
@task(name="quantize-gguf", **EPHEMERAL)
def quantize_gguf_task(f16: Path, out_path: Path, format_name: str) -> Path:
    """Return the GGUF quantized by llama.cpp's quantizer for format_name."""
    return quantize_gguf(f16, out_path, SCHEMES[format_name])


@task(name="quantize-awq", **EPHEMERAL)
def quantize_awq_task(model: LanguageModelRef, out_dir: Path, calibration: Dataset) -> Path:
    """Return the AWQ W4A16 checkpoint folder made by llm-compressor from the calibration windows."""
    return quantize_awq(model.model_dir, out_dir, calibration.inputs["input_ids"])


@task(name="evaluate-checkpoint", **cached())
def evaluate_checkpoint_task(checkpoint: Path, reference: np.ndarray, windows: np.ndarray) -> Evaluation:
    """Return a Hugging Face checkpoint's Evaluation against the full-precision logits, run
    through transformers on the CPU."""
    return compare(reference, torch_logits(checkpoint, windows), windows)


@task(name="evaluate-gguf", **cached())
def evaluate_gguf_task(gguf: Path, reference: np.ndarray, windows: np.ndarray) -> Evaluation:
    """Return the GGUF's Evaluation against the full-precision logits, run through llama.cpp."""
    return compare(reference, llama_cpp_logits(gguf, windows), windows)


@task(name="benchmark-language-models", timeout_seconds=1800, **EPHEMERAL)
def benchmark_lm_task(gguf: dict[str, Path], checkpoints: dict[str, Path]) -> dict[str, LMBenchmark]:
    """Return an LMBenchmark per labelled model, each in a fresh process: GGUF files with
    llama.cpp, checkpoint folders with transformers."""
    return benchmark_gguf(gguf) | (benchmark_transformers(checkpoints) if checkpoints else {})
