"""Run models on the evaluation set and compare them with the FP32 baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import task

from quantmill.data import Dataset
from quantmill.evaluation import Evaluation, evaluate, predict
from tasks.policy import EPHEMERAL, cached


@task(name="predict-fp32", timeout_seconds=1800, **EPHEMERAL)
def baseline_outputs_task(model: Path, evaluation: Dataset) -> np.ndarray:
    """Return the FP32 model's outputs on the evaluation set."""
    return predict(model, evaluation)


@task(name="evaluate", timeout_seconds=1800, **cached())
def evaluate_task(quantized: Path, evaluation: Dataset, baseline_outputs: np.ndarray, task_name: str) -> Evaluation:
    """Return the quantized model's Evaluation against the FP32 outputs."""
    return evaluate(task_name, baseline_outputs, predict(quantized, evaluation), evaluation)
