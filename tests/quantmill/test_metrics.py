import math

import numpy as np
import pytest

from quantmill.errors import QuantmillError
from quantmill.metrics import budget_for
from quantmill.metrics import compare_logits as compare


def test_uniform_logits_have_perplexity_equal_to_the_vocabulary():
    windows = np.array([[1, 2, 3, 4, 5]])
    uniform = np.zeros((1, 4, 8))
    result = compare(uniform, uniform, windows)
    assert result.baseline_metric == pytest.approx(8.0)
    assert result.accuracy_drop == pytest.approx(0.0)
    assert result.secondary["mean_kl"] == pytest.approx(0.0)


def test_a_case_worked_by_hand():
    # Two-token vocabulary, target always token 0. Reference p = (1/2, 1/2): perplexity 2.
    # Candidate q = (1/4, 3/4): perplexity 4, i.e. +100 %; KL(p||q) = 1/2 ln 2 + 1/2 ln(2/3).
    windows = np.array([[0, 0, 0]])
    reference = np.zeros((1, 2, 2))
    candidate = np.log(np.array([[[0.25, 0.75], [0.25, 0.75]]]))
    result = compare(reference, candidate, windows)
    assert result.metric_name == "perplexity"
    assert (result.baseline_metric, result.quantized_metric) == (pytest.approx(2.0), pytest.approx(4.0))
    assert result.accuracy_drop == pytest.approx(100.0)
    assert result.secondary["mean_kl"] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    # argmax of the uniform reference is token 0; the candidate's is token 1.
    assert result.secondary["top1_agreement"] == pytest.approx(0.0)
    # Δp as llama.cpp's perplexity tool defines it: the target's probability, candidate minus reference.
    assert result.secondary["mean_delta_p"] == pytest.approx(-25.0)
    assert result.secondary["rms_delta_p"] == pytest.approx(25.0)


def test_kl_statistics_match_scipy_on_random_distributions():
    from scipy.special import log_softmax, softmax
    from scipy.stats import entropy

    rng = np.random.default_rng(0)
    windows = rng.integers(0, 50, size=(12, 9))
    reference = rng.normal(size=(12, 8, 50))
    candidate = reference + rng.normal(scale=0.3, size=reference.shape)
    result = compare(reference, candidate, windows)
    kl = entropy(softmax(reference, -1), softmax(candidate, -1), axis=-1)
    # Log-probabilities are float32 (memory at real vocabularies), scipy's float64.
    close = {"rel": 1e-5}
    assert result.secondary["mean_kl"] == pytest.approx(kl.mean(), **close)
    assert result.secondary["median_kl"] == pytest.approx(np.median(kl), **close)
    assert result.secondary["p99_kl"] == pytest.approx(np.percentile(kl, 99), **close)
    assert result.secondary["max_kl"] == pytest.approx(kl.max(), **close)
    assert result.secondary["mean_kl_ci_low"] < kl.mean() < result.secondary["mean_kl_ci_high"]
    picked = np.take_along_axis(log_softmax(candidate, -1) * 0 + softmax(candidate, -1) - softmax(reference, -1),
                                windows[:, 1:, None], -1)
    assert result.secondary["p01_delta_p"] == pytest.approx(100 * np.percentile(picked, 1), **close)


def test_a_budget_carries_its_unit_and_is_never_converted():
    assert budget_for("classification").describe() == "1 points"
    assert budget_for("language-modeling", max_ppl_increase=2).unit == "% perplexity increase"
    with pytest.raises(QuantmillError, match="language-modeling takes its budget as max_ppl_increase"):
        budget_for("language-modeling", max_accuracy_drop=1.0)
    with pytest.raises(QuantmillError, match="embedding takes its budget as max_accuracy_drop"):
        budget_for("embedding", max_ppl_increase=1.0)


def test_a_kld_bound_is_for_language_models_only_and_positive():
    budget = budget_for("language-modeling", max_ppl_increase=2, max_kld=0.01)
    assert budget.max_kld == 0.01 and budget.describe() == "2 % perplexity increase and mean KLD 0.01"
    with pytest.raises(QuantmillError, match="classification has no KL divergence"):
        budget_for("classification", max_kld=0.01)
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(QuantmillError, match="max_kld must be a finite number of nats above 0"):
            budget_for("language-modeling", max_kld=bad)
    with pytest.raises(QuantmillError, match="max_ppl_increase must be 0 or more % perplexity increase, not -50"):
        budget_for("language-modeling", max_ppl_increase=-50)
