"""Measure a quantized model against its FP32 original on held-out data, with the task's
metric, per slice, keeping the worst disagreements for debugging."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from quantmill.data import Dataset

EVAL_BATCH = 64
WORST_KEPT = 10
NEIGHBOURS = 10


@dataclass(frozen=True)
class Evaluation:
    """The task metric (in percent) for FP32 and quantized, the drop in points
    (baseline - quantized), secondary metrics, per-slice metrics, and the worst samples."""

    metric_name: str
    baseline_metric: float
    quantized_metric: float
    accuracy_drop: float
    secondary: dict[str, float] = field(default_factory=dict)
    per_slice: dict[str, dict[str, float]] = field(default_factory=dict)
    worst: tuple[dict, ...] = field(default=())


def drop_unit(metric_name: str) -> str:
    """Return the unit a drop in this metric is stated in: percent perplexity increase for
    language models, metric points otherwise."""
    return "%" if metric_name == "perplexity" else "pts"


def session(model_path: Path, threads: int = 0) -> ort.InferenceSession:
    """Return a CPU InferenceSession for model_path with full graph optimization."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def predict(model_path: Path, dataset: Dataset) -> np.ndarray:
    """Return the model's first output over every sample of dataset, stacked in order."""
    runner = session(model_path)
    return np.concatenate([runner.run(None, feed)[0] for feed in dataset.batches(EVAL_BATCH)]).astype(np.float64)


def evaluate(task: str, baseline: np.ndarray, quantized: np.ndarray, dataset: Dataset) -> Evaluation:
    """Return the Evaluation of quantized outputs against baseline outputs for task.

    Raises ValueError for an unknown task or classification data without labels.
    """
    if task == "classification":
        if dataset.labels is None:
            raise ValueError(f"{dataset.path}: classification needs 'labels'")
        return _classification(baseline, quantized, dataset.labels)
    if task == "embedding":
        return _embedding(baseline, quantized, dataset.texts)
    raise ValueError(f"unknown task {task!r}")


def _classification(baseline: np.ndarray, quantized: np.ndarray, labels: np.ndarray) -> Evaluation:
    base_pred, quant_pred = baseline.argmax(1), quantized.argmax(1)
    base_acc = 100.0 * float(np.mean(base_pred == labels))
    quant_acc = 100.0 * float(np.mean(quant_pred == labels))
    per_class = {
        str(c): {
            "baseline": 100.0 * float(np.mean(base_pred[labels == c] == c)),
            "quantized": 100.0 * float(np.mean(quant_pred[labels == c] == c)),
            "samples": float(np.sum(labels == c)),
        }
        for c in np.unique(labels)
    }
    base_prob, quant_prob = _softmax(baseline), _softmax(quantized)
    # Rank samples by how far the quantized model moved the probability of FP32's answer.
    shift = base_prob[np.arange(len(labels)), base_pred] - quant_prob[np.arange(len(labels)), base_pred]
    order = np.argsort(-(np.abs(shift) + (base_pred != quant_pred)))
    worst = tuple(
        {
            "index": int(i), "label": int(labels[i]),
            "baseline_prediction": int(base_pred[i]), "quantized_prediction": int(quant_pred[i]),
            "baseline_confidence": round(float(base_prob[i, base_pred[i]]), 4),
            "quantized_confidence_in_baseline_class": round(float(quant_prob[i, base_pred[i]]), 4),
        }
        for i in order[:WORST_KEPT]
    )
    return Evaluation(
        "top1_accuracy", base_acc, quant_acc, base_acc - quant_acc,
        secondary={"prediction_agreement": 100.0 * float(np.mean(base_pred == quant_pred))},
        per_slice=per_class, worst=worst,
    )


def _embedding(baseline: np.ndarray, quantized: np.ndarray, texts: tuple[str, ...]) -> Evaluation:
    base, quant = _unit(baseline), _unit(quantized)
    cosine = np.sum(base * quant, axis=1)
    k = min(NEIGHBOURS, len(base) - 1)
    agreement = 100.0 * float(np.mean([
        len(set(a) & set(b)) / k for a, b in zip(_neighbours(base, k), _neighbours(quant, k))
    ]))
    worst = tuple(
        {"index": int(i), "text": texts[i][:200] if texts else "", "cosine_to_fp32": round(float(cosine[i]), 5)}
        for i in np.argsort(cosine)[:WORST_KEPT]
    )
    # FP32 agrees with itself perfectly, so the baseline of neighbour agreement is 100.
    return Evaluation(
        f"retrieval_agreement_at_{k}", 100.0, agreement, 100.0 - agreement,
        secondary={"mean_cosine_similarity": float(cosine.mean()), "min_cosine_similarity": float(cosine.min())},
        worst=worst,
    )


def _neighbours(unit: np.ndarray, k: int) -> np.ndarray:
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1)[:, :k]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
