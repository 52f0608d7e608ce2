"""The task metrics: how a quantized model's outputs compare with the full-precision model's
on held-out data, per slice, keeping the worst disagreements for debugging. Each task
declares the unit its drop (and so its budget) is stated in.

The evaluation data is split in two fixed halves: attempts are chosen on the first
(the ladder looks at many attempts and stops at the first within budget, which is selection
on that half), and the drop the gate judges is measured again on the second, untouched half,
with a bootstrap interval."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import stats

from quantmill.data import Dataset
from quantmill.errors import InputError, QuantmillError
from quantmill.logprobs import LogProbs, log_softmax, release

WORST_KEPT = 10
NEIGHBOURS = 10
# Each half needs enough samples for a bootstrap interval and for neighbours to mean something.
MIN_EVALUATION_SAMPLES = 16
CONFIDENCE = 0.95
RESAMPLES = 2000
# A fixed split and a fixed bootstrap seed: the same data gives the same halves and the same
# interval, so the same inputs give the same decision run after run.
SPLIT_SEED = 0
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Evaluation:
    """The task metric (in percent) for FP32 and quantized, the drop in the task's unit
    (baseline - quantized, or the relative perplexity increase), its 95% bootstrap interval
    over samples, how many samples it was measured on, secondary metrics, per-slice metrics,
    and the worst samples. From TaskMetric.evaluate: measured on the choosing half, with
    confirmed the same measured on the confirming half."""

    metric_name: str
    baseline_metric: float
    quantized_metric: float
    accuracy_drop: float
    secondary: dict[str, float] = field(default_factory=dict)
    per_slice: dict[str, dict[str, float]] = field(default_factory=dict)
    worst: tuple[dict, ...] = field(default=())
    interval: tuple[float, float] | None = None
    samples: int = 0
    confirmed: Evaluation | None = None


@dataclass(frozen=True)
class Budget:
    """The most a quantized model may lose: value in unit (e.g. 1.0 "points" of accuracy,
    5.0 "% perplexity increase"), set through the flow parameter named parameter; and, for
    language models, optionally the most mean KL divergence from the full-precision model's
    next-token distribution (max_kld, in nats), llama.cpp's own quality measure."""

    value: float
    unit: str
    parameter: str
    max_kld: float | None = None

    def describe(self) -> str:
        """Return e.g. '1 points' or '5 % perplexity increase and mean KLD 0.01'."""
        kld = "" if self.max_kld is None else f" and mean KLD {self.max_kld:g}"
        return f"{self.value:g} {self.unit}{kld}"

    def meets(self, evaluation: Evaluation) -> bool:
        """Return whether evaluation's drop, and its mean KL divergence where max_kld is set,
        are within this budget."""
        return evaluation.accuracy_drop <= self.value and not self.kld_over(evaluation)

    def kld_over(self, evaluation: Evaluation) -> bool:
        """Return whether max_kld is set and evaluation's mean KL divergence is over it."""
        return self.max_kld is not None and evaluation.secondary["mean_kl"] > self.max_kld


@dataclass(frozen=True)
class TaskMetric:
    """A task's metric: how outputs are compared, the unit of a drop, and the flow parameter
    (and its default) that sets the budget in that unit."""

    task: str
    unit: str
    budget_parameter: str
    default_budget: float
    compare: Callable[[np.ndarray, np.ndarray, Dataset], Evaluation]
    # Whether the task scores labels where the data has them (classification).
    takes_labels: bool = False
    # Whether compare reports the mean KL divergence (secondary "mean_kl") a KLD budget judges.
    reports_kld: bool = False

    def check(self, dataset: Dataset, classes: int | None = None) -> None:
        """Raise InputError naming the file when dataset cannot be scored by this metric:
        labels outside the model's classes (when the model says how many), or fewer samples
        than two halves need. Unlabelled classification data is scored by agreement with
        full precision."""
        if self.takes_labels and dataset.labels is not None and classes is not None and len(dataset.labels) \
                and dataset.labels.max() >= classes:
            raise InputError(dataset.path, f"'labels' holds class {int(dataset.labels.max())}, but the model scores "
                                           f"{classes} classes (0-{classes - 1})")
        if len(dataset) < MIN_EVALUATION_SAMPLES:
            raise InputError(dataset.path, f"{len(dataset)} evaluation samples; at least {MIN_EVALUATION_SAMPLES} are needed "
                                           "(half to choose an attempt, half to confirm it)")

    def evaluate(self, reference: np.ndarray, outputs: np.ndarray, dataset: Dataset) -> Evaluation:
        """Return the Evaluation of outputs against reference on dataset's choosing half,
        with confirmed set to the Evaluation on its confirming half (halves from halves())."""
        choose, confirm = halves(len(dataset))
        chosen_on, confirmed = (_in_whole(self.compare(reference[part], outputs[part], dataset.take(part)), part)
                                for part in (choose, confirm))
        return replace(chosen_on, confirmed=confirmed)

    def evaluate_model(self, reference: object, run: Callable[[Path, Dataset], object], path: Path,
                       dataset: Dataset) -> Evaluation:
        """Return evaluate() of the outputs of the model at path (run(path, dataset)) against
        reference; outputs kept on disk (logprobs.LogProbs) are deleted once read."""
        outputs = run(path, dataset)
        try:
            return self.evaluate(reference, outputs, dataset)
        finally:
            release(outputs)

    def budget(self, value: float | None, max_kld: float | None = None) -> Budget:
        """Return the budget for value (the default when None) and max_kld."""
        return Budget(self.default_budget if value is None else float(value), self.unit, self.budget_parameter,
                      None if max_kld is None else float(max_kld))


def halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the sample indices (each sorted) of the choosing and the confirming half of
    n samples: a fixed random split, so that neither half is one end of the file."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def _in_whole(evaluation: Evaluation, part: np.ndarray) -> Evaluation:
    """Return evaluation with its worst samples numbered as in the whole data set."""
    renumbered = tuple({k: int(part[v]) if k in ("index", "window") else v for k, v in w.items()} for w in evaluation.worst)
    return replace(evaluation, worst=renumbered)


def _interval(statistic: Callable[..., np.ndarray], *samples: np.ndarray) -> tuple[float, float] | None:
    """Return the 95% percentile-bootstrap interval of statistic over paired samples (None
    for fewer than two)."""
    if len(samples[0]) < 2:
        return None
    result = stats.bootstrap(samples, statistic, paired=True, vectorized=True, n_resamples=RESAMPLES,
                             confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return 100.0 * (np.mean(a, axis=axis) - np.mean(b, axis=axis))


def _perplexity_increase(base_nll: np.ndarray, cand_nll: np.ndarray, axis: int = -1) -> np.ndarray:
    return 100.0 * np.expm1(np.mean(cand_nll, axis=axis) - np.mean(base_nll, axis=axis))


def _classification_of(baseline: np.ndarray, quantized: np.ndarray, dataset: Dataset) -> Evaluation:
    if dataset.labels is None:
        return _agreement(baseline, quantized)
    return _classification(baseline, quantized, dataset.labels)


def _class_kl(baseline: np.ndarray, quantized: np.ndarray) -> dict[str, float]:
    """Return the KL divergence of the quantized model's class distribution from full
    precision's per sample: mean, median, 99th percentile (nats)."""
    reference = log_softmax(baseline)
    kl = np.sum(np.exp(reference) * (reference - log_softmax(quantized)), axis=1, dtype=np.float64)
    return {"mean_kl": float(kl.mean()), "median_kl": float(np.median(kl)), "p99_kl": float(np.percentile(kl, 99))}


def _agreement(baseline: np.ndarray, quantized: np.ndarray) -> Evaluation:
    """Top-1 agreement with full precision, for data without labels: full precision's answer
    stands for the label, so the baseline scores 100 and the drop is the share of samples
    whose top class changed (points)."""
    same = (baseline.argmax(1) == quantized.argmax(1)).astype(float)
    agreement = 100.0 * float(same.mean())
    order = np.argsort(same, kind="stable")
    worst = tuple({"index": int(i), "baseline_prediction": int(baseline[i].argmax()),
                   "quantized_prediction": int(quantized[i].argmax())} for i in order[:WORST_KEPT] if not same[i])
    return Evaluation(
        "top1_agreement", 100.0, agreement, 100.0 - agreement,
        secondary={"prediction_agreement": agreement, **_class_kl(baseline, quantized)}, worst=worst,
        interval=_interval(_mean_difference, np.ones_like(same), same), samples=len(same),
    )


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
    base_right, quant_right = (base_pred == labels).astype(float), (quant_pred == labels).astype(float)
    return Evaluation(
        "top1_accuracy", base_acc, quant_acc, base_acc - quant_acc,
        secondary={"prediction_agreement": 100.0 * float(np.mean(base_pred == quant_pred)), **_class_kl(baseline, quantized)},
        per_slice=per_class, worst=worst,
        interval=_interval(_mean_difference, base_right, quant_right), samples=len(labels),
    )


def _embedding(baseline: np.ndarray, quantized: np.ndarray, texts: tuple[str, ...]) -> Evaluation:
    base, quant = _unit(baseline), _unit(quantized)
    cosine = np.sum(base * quant, axis=1)
    k = min(NEIGHBOURS, len(base) - 1)
    overlap = np.array([len(set(a) & set(b)) / k for a, b in zip(_neighbours(base, k), _neighbours(quant, k))])
    agreement = 100.0 * float(overlap.mean())
    worst = tuple(
        {"index": int(i), "text": texts[i][:200] if texts else "", "cosine_to_fp32": round(float(cosine[i]), 5)}
        for i in np.argsort(cosine)[:WORST_KEPT]
    )
    # FP32 agrees with itself perfectly, so the baseline of neighbour agreement is 100.
    return Evaluation(
        f"retrieval_agreement_at_{k}", 100.0, agreement, 100.0 - agreement,
        secondary={"mean_cosine_similarity": float(cosine.mean()), "min_cosine_similarity": float(cosine.min())},
        worst=worst, interval=_interval(_mean_difference, np.ones_like(overlap), overlap), samples=len(overlap),
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


def compare_logits(reference: np.ndarray | LogProbs, candidate: np.ndarray | LogProbs, windows: np.ndarray,
                   context: int = 0) -> Evaluation:
    """Return the Evaluation of candidate against reference on token windows, each given as
    logits [windows, positions, vocab] or as LogProbs; one window of each is held at a time,
    in float32, and reduced to per-position figures (memory stays flat in the vocabulary
    size and the window count). The first `context` positions of each window are context
    only, not scored: llama-perplexity scores the second half of each chunk (context =
    n_ctx // 2), so that every scored token has at least that much before it.

    The drop is the relative perplexity increase in percent; baseline_metric and
    quantized_metric are the two perplexities. Secondary metrics follow llama.cpp's
    perplexity tool (--kl-divergence): the KL divergence of the candidate's next-token
    distribution from the reference's (mean with its 95% bootstrap interval over windows,
    median, 99th percentile, max; nats), Δp, the change in the probability given to the
    actual next token (mean, RMS, 1st and 99th percentiles; percent), and the share of
    positions whose top token is the same ("top1_agreement", percent).
    """
    targets = windows[:, 1 + context:]
    per_window = [_position_figures(ref[context:], cand[context:], target)
                  for ref, cand, target in zip(_log_prob_windows(reference), _log_prob_windows(candidate), targets)]
    kl, ref_picked, cand_picked, same = (np.stack(column) for column in zip(*per_window))
    base_ppl, cand_ppl = math.exp(-float(ref_picked.mean())), math.exp(-float(cand_picked.mean()))
    delta_p = 100.0 * (np.exp(cand_picked) - np.exp(ref_picked))
    per_window_kl = kl.mean(axis=1)
    worst = tuple(
        {"window": int(i), "mean_kl": round(float(per_window_kl[i]), 5)} for i in np.argsort(-per_window_kl)[:WORST_KEPT]
    )
    kl_low, kl_high = _interval(np.mean, per_window_kl) or (float(kl.mean()), float(kl.mean()))
    # Windows are of equal length, so the mean of window means is the mean over tokens.
    base_nll, cand_nll = -ref_picked.mean(axis=1), -cand_picked.mean(axis=1)
    return Evaluation(
        "perplexity", base_ppl, cand_ppl, 100.0 * (cand_ppl / base_ppl - 1.0),
        secondary={
            "top1_agreement": 100.0 * float(same.mean()), "mean_kl": float(kl.mean()), "mean_kl_ci_low": kl_low,
            "mean_kl_ci_high": kl_high, "median_kl": float(np.median(kl)), "p99_kl": float(np.percentile(kl, 99)),
            "max_kl": float(kl.max()), "mean_delta_p": float(delta_p.mean()), "rms_delta_p": float(np.sqrt(np.mean(delta_p ** 2))),
            "p01_delta_p": float(np.percentile(delta_p, 1)), "p99_delta_p": float(np.percentile(delta_p, 99)),
            "tokens": float(targets.size),
        },
        worst=worst, interval=_interval(_perplexity_increase, base_nll, cand_nll), samples=len(windows),
    )


def _log_prob_windows(outputs: np.ndarray | LogProbs):
    if isinstance(outputs, LogProbs):
        return outputs.windows()
    return (log_softmax(logits) for logits in outputs)


def _position_figures(ref: np.ndarray, cand: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return, per position, KL(ref || cand), the two log-probabilities of the actual next
    token, and whether the top tokens agree (float64 where a sum is taken)."""
    kl = np.sum(np.exp(ref) * (ref - cand), axis=-1, dtype=np.float64)
    positions = np.arange(len(targets))
    return (kl, ref[positions, targets].astype(np.float64), cand[positions, targets].astype(np.float64),
            ref.argmax(-1) == cand.argmax(-1))


def window_log_perplexity(window_logits: Iterable[np.ndarray], windows: np.ndarray) -> np.ndarray:
    """Return each window's mean negative log-likelihood of its own next tokens under its
    logits [positions, vocab], given one window at a time."""
    positions = np.arange(windows.shape[1] - 1)
    return np.array([-float(np.mean(log_softmax(logits)[positions, window[1:]], dtype=np.float64))
                     for logits, window in zip(window_logits, windows)])


METRICS = {m.task: m for m in (
    TaskMetric("classification", "points", "max_accuracy_drop", 1.0, _classification_of, takes_labels=True),
    TaskMetric("embedding", "points", "max_accuracy_drop", 1.0, _embedding_of),
    TaskMetric("language-modeling", "% perplexity increase", "max_ppl_increase", 5.0, _perplexity_of, reports_kld=True),
)}


def get_metric(task: str) -> TaskMetric:
    """Return the metric of task. Raises QuantmillError naming the known tasks."""
    if task not in METRICS:
        raise QuantmillError(f"unknown task {task!r}; known: {', '.join(METRICS)}")
    return METRICS[task]


def budget_for(task: str, max_accuracy_drop: float | None = None, max_ppl_increase: float | None = None,
               max_kld: float | None = None) -> Budget:
    """Return task's budget from whichever of the two budget parameters its metric reads
    (its default when that one is None), with max_kld where given.

    Raises QuantmillError for an unknown task; when the other parameter is given (a budget
    in the wrong unit is never converted); for a budget that is NaN, infinite or negative
    (a negative budget asks for a quantized model better than full precision, which no
    gate can promise); and for max_kld on a task whose metric has no KL divergence, or
    max_kld not a finite number above 0.
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
    if value is not None and float(value) < 0:
        raise QuantmillError(f"{metric.budget_parameter} must be 0 or more {metric.unit}, not {float(value):g}: "
                             "a negative budget asks for a model better than full precision")
    if max_kld is not None and not metric.reports_kld:
        raise QuantmillError(f"{task} has no KL divergence to budget; max_kld is for language-modeling")
    if max_kld is not None and not (math.isfinite(float(max_kld)) and float(max_kld) > 0):
        raise QuantmillError(f"max_kld must be a finite number of nats above 0, not {max_kld}")
    return metric.budget(value, max_kld)
