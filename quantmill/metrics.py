"""The task metrics: how a quantized model's outputs compare with the full-precision model's
on held-out data, per slice, keeping the worst disagreements for debugging. Each task
declares the unit its drop (and so its budget) is stated in."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from quantmill.data import Dataset
from quantmill.errors import InputError, QuantmillError

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


@dataclass(frozen=True)
class Budget:
    """The most a quantized model may lose: value in unit (e.g. 1.0 "points" of accuracy,
    5.0 "% perplexity increase"), set through the flow parameter named parameter."""

    value: float
    unit: str
    parameter: str

    def describe(self) -> str:
        """Return e.g. '1 points' or '5 % perplexity increase'."""
        return f"{self.value:g} {self.unit}"


@dataclass(frozen=True)
class TaskMetric:
    """A task's metric: how outputs are compared, the unit of a drop, and the flow parameter
    (and its default) that sets the budget in that unit."""

    task: str
    unit: str
    budget_parameter: str
    default_budget: float
    compare: Callable[[np.ndarray, np.ndarray, Dataset], Evaluation]
    needs_labels: bool = False

    def check(self, dataset: Dataset) -> None:
        """Raise InputError naming the file when dataset cannot be scored by this metric
        (classification data without one integer label per sample)."""
        if self.needs_labels and dataset.labels is None:
            raise InputError(dataset.path, f"{self.task} needs 'labels', one integer class per sample")

    def budget(self, value: float | None) -> Budget:
        """Return the budget for value (the default when None)."""
        return Budget(self.default_budget if value is None else float(value), self.unit, self.budget_parameter)


def _classification_of(baseline: np.ndarray, quantized: np.ndarray, dataset: Dataset) -> Evaluation:
    if dataset.labels is None:
        raise QuantmillError(f"{dataset.path}: classification needs 'labels'")
    return _classification(baseline, quantized, dataset.labels)


def _embedding_of(baseline: np.ndarray, quantized: np.ndarray, dataset: Dataset) -> Evaluation:
    return _embedding(baseline, quantized, dataset.texts)


def _perplexity_of(reference: np.ndarray, candidate: np.ndarray, dataset: Dataset) -> Evaluation:
    return compare_logits(reference, candidate, dataset.inputs["input_ids"])


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


def compare_logits(reference: np.ndarray, candidate: np.ndarray, windows: np.ndarray) -> Evaluation:
    """Return the Evaluation of candidate logits against reference logits on token windows.

    The drop is the relative perplexity increase in percent; baseline_metric and
    quantized_metric are the two perplexities.
    """
    targets = windows[:, 1:]
    ref_logp, cand_logp = _log_softmax(reference), _log_softmax(candidate)
    base_ppl, cand_ppl = _perplexity(ref_logp, targets), _perplexity(cand_logp, targets)
    kl = np.sum(np.exp(ref_logp) * (ref_logp - cand_logp), axis=-1)
    agreement = np.mean(reference.argmax(-1) == candidate.argmax(-1))
    per_window_kl = kl.mean(axis=1)
    worst = tuple(
        {"window": int(i), "mean_kl": round(float(per_window_kl[i]), 5)} for i in np.argsort(-per_window_kl)[:WORST_KEPT]
    )
    return Evaluation(
        "perplexity", base_ppl, cand_ppl, 100.0 * (cand_ppl / base_ppl - 1.0),
        secondary={"top1_agreement": 100.0 * float(agreement), "mean_kl": float(kl.mean()), "tokens": float(targets.size)},
        worst=worst,
    )


def window_log_perplexity(logits: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Return each window's mean negative log-likelihood of its own next tokens under logits."""
    picked = np.take_along_axis(_log_softmax(logits), windows[:, 1:, None], axis=-1)[..., 0]
    return -picked.mean(axis=1)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _perplexity(log_probs: np.ndarray, targets: np.ndarray) -> float:
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return math.exp(-float(picked.mean()))


METRICS = {m.task: m for m in (
    TaskMetric("classification", "points", "max_accuracy_drop", 1.0, _classification_of, needs_labels=True),
    TaskMetric("embedding", "points", "max_accuracy_drop", 1.0, _embedding_of),
    TaskMetric("language-modeling", "% perplexity increase", "max_ppl_increase", 5.0, _perplexity_of),
)}


def get_metric(task: str) -> TaskMetric:
    """Return the metric of task. Raises QuantmillError naming the known tasks."""
    if task not in METRICS:
        raise QuantmillError(f"unknown task {task!r}; known: {', '.join(METRICS)}")
    return METRICS[task]


def budget_for(task: str, max_accuracy_drop: float | None = None, max_ppl_increase: float | None = None) -> Budget:
    """Return task's budget from whichever of the two budget parameters its metric reads
    (its default when that one is None).

    Raises QuantmillError for an unknown task, or when the other parameter is given: a
    budget in the wrong unit is never converted.
    """
    metric = get_metric(task)
    given = {"max_accuracy_drop": max_accuracy_drop, "max_ppl_increase": max_ppl_increase}
    wrong = [name for name, value in given.items() if value is not None and name != metric.budget_parameter]
    if wrong:
        raise QuantmillError(
            f"{task} takes its budget as {metric.budget_parameter} ({metric.unit}), not {wrong[0]}"
        )
    value = given[metric.budget_parameter]
    if value is not None and not math.isfinite(float(value)):
        raise QuantmillError(f"{metric.budget_parameter} must be a finite number of {metric.unit}, not {value}")
    return metric.budget(value)
