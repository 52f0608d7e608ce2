"""The benchmark-on-hardware flow: measure candidate models on the hardware of the work
pool's worker that runs it. quantize-model starts one per hardware target."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from quantmill.formats import get_format
from quantmill.models import Model
from quantmill.targets import get_target
from tasks.benchmark import benchmark_task
from tasks.calibration import load_data_task


@flow(name="benchmark-on-hardware", persist_result=True, result_serializer="json")
def benchmark_on_hardware(
    target: str, model: dict, models: dict[str, dict], eval_data: str, benchmark_seconds: float = 1.0,
    judged: list[str] | None = None, objective: str = "throughput",
) -> dict:
    """Return TargetBenchmarks.to_dict() for the labelled models ({"format", "path"}: the
    full-precision baselines and the attempts) of the resolved model (Model.to_dict()),
    measured on this worker for target on eval_data, until judged ([attempt label, its
    baseline's label]) is settled beyond the noise on the figure objective judges. A worker
    that cannot run target returns no figures and the reason."""
    source = Model.from_dict(model)
    data = load_data_task(source, Path(eval_data))
    # Deployment parameters are JSON: names become the target and formats here, once.
    entries = {label: (get_format(entry["format"]), Path(entry["path"])) for label, entry in models.items()}
    return benchmark_task(get_target(target), entries, data, benchmark_seconds, tuple(judged) if judged else None,
                          objective).to_dict()
