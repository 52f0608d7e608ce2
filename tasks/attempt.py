"""One attempt the driver asks for, made of the quantize, evaluate and export tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quantmill.attempts import Attempt
from quantmill.data import Dataset
from quantmill.formats import baselines_for
from quantmill.logprobs import LogProbs
from quantmill.models import Model
from quantmill.provenance import artifact_metadata
from quantmill.search import MakeAttempt
from tasks.evaluate import evaluate_task
from tasks.export import export_task
from tasks.quantize import quantize_attempt


def make_attempt(request: MakeAttempt, model: Model, calibration: Dataset, evaluation: Dataset,
                 reference: np.ndarray | LogProbs, task_name: str, workdir: Path, run_out: Path) -> Attempt:
    """Return the attempt request asks for: quantized (cached), evaluated against reference
    and exported to run_out/attempts/. Raises what the tasks raise (a crashed worker's
    WorkerCrashed among them)."""
    step, fmt = request.step, request.format
    quantized = quantize_attempt(fmt, model, step.options, calibration, workdir)
    result = evaluate_task(fmt, quantized, evaluation, reference, task_name)
    artifact = export_task(
        fmt, quantized, run_out / "attempts" / f"{request.index:02d}-{step.format}",
        artifact_metadata(step.format, step.options, model.uri, model.sha256, model.version, calibration.sha256),
    )
    return Attempt(request.index, step.format, step.options, step.reason, artifact, result, None,
                   baselines_for(model.kind, [step.format])[step.format])
