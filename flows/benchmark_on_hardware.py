"""The benchmark-on-hardware flow: measure candidate models on the hardware of the work
pool's worker that runs it. quantize-model starts one per hardware target."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from tasks.benchmark import benchmark_task, load_feeds_task


@flow(name="benchmark-on-hardware", persist_result=True, result_serializer="json")
def benchmark_on_hardware(
    target: str, models: dict[str, str], eval_data: str, tokenizer_dir: str | None = None,
    benchmark_seconds: float = 1.0,
) -> dict:
    """Return TargetBenchmarks.to_dict() for the labelled ONNX models (one labelled "fp32"
    is the baseline, whose inputs shape eval_data), measured on this worker for target.
    A worker that cannot run target returns no figures and the reason."""
    feeds = load_feeds_task(Path(models["fp32"]), Path(eval_data), Path(tokenizer_dir) if tokenizer_dir else None)
    measured = benchmark_task(target, {label: Path(path) for label, path in models.items()}, feeds, benchmark_seconds)
    return measured.to_dict()
