"""Run models on the evaluation set and compare them with the full-precision reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import task

from quantmill.data import Dataset
from quantmill.formats import Format
from quantmill.logprobs import LogProbs
from quantmill.metrics import Evaluation, get_metric
from quantmill.models import Model, get_kind
from quantmill.runtimes import get_runtime
from tasks.policy import EPHEMERAL, cached


@task(name="reference-outputs", timeout_seconds=1800, **EPHEMERAL)
def reference_outputs_task(model: Model, evaluation: Dataset) -> np.ndarray | LogProbs:
    """Return the full-precision model's outputs on the evaluation set, from the runtime its
    kind names as the reference (a language model's log-probabilities are kept on disk)."""
    return get_runtime(get_kind(model.kind).reference_runtime).outputs(model.path, evaluation)


@task(name="evaluate", timeout_seconds=1800, **cached())
def evaluate_task(fmt: Format, quantized: Path, evaluation: Dataset, reference: np.ndarray | LogProbs,
                  task_name: str) -> Evaluation:
    """Return the quantized model's Evaluation against the reference outputs, run by the
    format's evaluation runner and compared by the task's metric on the choosing half, with
    its confirmation on the other half."""
    return get_metric(task_name).evaluate_model(reference, fmt.evaluation_runner(), quantized, evaluation)
