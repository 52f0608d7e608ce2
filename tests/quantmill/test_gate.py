from pathlib import Path

import numpy as np
import pytest

from quantmill.attempts import Attempt
from quantmill.calibration import CalibrationVerdict
from quantmill.exporters.artifact import ExportedArtifact
from quantmill.formats.onnx import OnnxStaticOptions
from quantmill.gate import FAILED, MANUAL_REVIEW, PASSED, decide
from quantmill.metrics import Budget, Evaluation, budget_for
from quantmill.runtimes.onnxruntime import Benchmark
from quantmill.speed import OBJECTIVES

POINTS = Budget(1.0, "points", "max_accuracy_drop")


def _verdict(status="pass"):
    return CalibrationVerdict(status, 100, 100, 0.1, 0.5, 4, 0, "x", 1.0, 1.0, "a", "b", ("why",) if status != "pass" else ())


def _bench(throughput, spread=0.01):
    # Five interleaved rounds a little apart, as a real run gives.
    rounds = [throughput * (1 + spread * k) for k in (-2, -1, 0, 1, 2)]
    return Benchmark(1.0, 1.0, {}, {"1": throughput, "32": throughput}, 1, 1, 1, {}, 5, {"32": rounds})


def _attempt(index, drop, throughput):
    artifact = ExportedArtifact(Path("."), Path("m"), "0" * 64, 1)
    evaluation = Evaluation("top1_accuracy", 98.0, 98.0 - drop, drop)
    return Attempt(index, "onnx-int8-static", OnnxStaticOptions(), "r", artifact, evaluation, _bench(throughput),
                   "onnx-fp32", _bench(100))


def test_first_attempt_within_budget_and_faster_passes():
    decision = decide(_verdict(), (_attempt(1, 2.0, 300), _attempt(2, 0.5, 200)), POINTS, "cpu")
    assert decision.status == PASSED and decision.chosen_attempt == 2
    assert "within the budget of 1 points" in decision.reasons[0]
    assert decision.reasons[-1].startswith("faster: 2.00x (95% CI")
    assert "the full-precision baseline's samples/s at batch 32 (onnx-fp32, same runtime)" in decision.reasons[-1]


def test_no_attempt_within_budget_fails_in_the_budgets_unit():
    decision = decide(_verdict(), (_attempt(1, 2.0, 300),), POINTS, "cpu")
    assert decision.status == FAILED and decision.chosen_attempt is None
    assert "best was onnx-int8-static at 2.00 points" in decision.reasons[0]
    percent = decide(_verdict(), (_attempt(1, 2.0, 300),), budget_for("language-modeling", None, 1.5), "cpu")
    assert "budget of 1.5 % perplexity increase" in percent.reasons[0]


def _lm_attempt(kl, kl_high):
    kl_stats = {"mean_kl": kl, "mean_kl_ci_low": kl / 2, "mean_kl_ci_high": kl_high}
    evaluation = Evaluation("perplexity", 10.0, 10.1, 1.0, secondary=kl_stats, interval=(0.5, 1.5), samples=32)
    made = _attempt(1, 1.0, 300)
    return Attempt(1, "gguf-q4_k_m", made.options, "r", made.artifact, evaluation, made.benchmark, "gguf-f16", made.baseline)


def test_a_kld_bound_fails_or_reviews_what_perplexity_alone_would_pass():
    budget = budget_for("language-modeling", max_ppl_increase=3, max_kld=0.01)
    assert decide(_verdict(), (_lm_attempt(0.005, 0.008),), budget, "cpu").status == PASSED
    over = decide(_verdict(), (_lm_attempt(0.02, 0.03),), budget, "cpu")
    assert over.status == FAILED and "no attempt met the budget of 3 % perplexity increase and mean KLD 0.01" in over.reasons[0]
    assert decide(_verdict(), (_lm_attempt(0.02, 0.03),), budget_for("language-modeling", max_ppl_increase=3), "cpu").status == PASSED
    noisy = decide(_verdict(), (_lm_attempt(0.008, 0.012),), budget, "cpu")
    assert noisy.status == MANUAL_REVIEW and "mean KLD's interval reaches 0.01200" in noisy.reasons[-1]


def test_slower_than_fp32_or_warned_calibration_needs_review():
    slower = decide(_verdict(), (_attempt(1, 0.1, 90),), POINTS, "cpu")
    assert slower.status == MANUAL_REVIEW and "slower than full precision" in slower.reasons[-1]
    assert decide(_verdict("warn"), (_attempt(1, 0.1, 300),), POINTS, "cpu").status == MANUAL_REVIEW


def test_a_speedup_within_the_noise_is_not_called_faster():
    # 1.05x by the medians, but rounds spread by 8 % each: the interval reaches below 1.02x.
    noisy = _attempt(1, 0.1, 105)
    noisy = Attempt(noisy.index, noisy.format, noisy.options, noisy.reason, noisy.artifact, noisy.evaluation,
                    _bench(105, spread=0.08), "onnx-fp32", _bench(100))
    decision = decide(_verdict(), (noisy,), POINTS, "cpu")
    assert decision.status == MANUAL_REVIEW
    assert decision.reasons[-1].startswith("no measurable speedup (the interval does not clear 1.02x)")


def test_the_speed_interval_is_the_paired_t_interval():
    from quantmill.speed import FASTER, NO_DIFFERENCE, SLOWER, compare

    base = [100.0, 90.0, 110.0, 100.0, 95.0]
    steady = compare([1.5 * b for b in base], base)
    assert steady.ratio == pytest.approx(1.5) and steady.low == pytest.approx(1.5) and steady.verdict == FASTER
    # The machine's slow spells hit both models alike: pairing removes them.
    paired = compare([1.2 * b * f for b, f in zip(base, (1.01, 0.99, 1.0, 1.02, 0.98))], base)
    assert paired.verdict == FASTER and 1.15 < paired.low < 1.2 < paired.high < 1.25
    assert compare([0.8 * b for b in base], base).verdict == SLOWER
    assert compare([120.0], [100.0]).verdict == NO_DIFFERENCE, "one round has no interval"


def test_benchmarks_go_on_while_the_judged_verdict_is_within_the_noise():
    from quantmill.speed import settled

    base = [100.0, 90.0, 110.0, 100.0, 95.0]
    clear = {"1": [1.5 * b for b in base], "onnx-fp32": base, "2": [b * f for b, f in zip(base, (1.3, 0.8, 1.1, 0.9, 1.0))]}
    assert settled(clear, ("1", "onnx-fp32")), "attempt 1 is clearly faster"
    assert not settled(clear, ("2", "onnx-fp32")), "attempt 2 is within the noise: measure more"
    assert settled(clear, None) and settled(clear, ("9", "onnx-fp32"))


def test_failed_calibration_fails_whatever_the_attempts():
    assert decide(_verdict("fail"), (_attempt(1, 0.0, 300),), POINTS, "cpu").status == FAILED


def test_speed_is_judged_against_full_precision_on_the_same_runtime():
    from quantmill.formats import baselines_for

    assert baselines_for("hf-causal-lm", ["gguf-q4_k_m", "awq-w4a16"]) == {
        "gguf-q4_k_m": "gguf-f16", "awq-w4a16": "hf-checkpoint",
    }
    assert baselines_for("hf-encoder", ["onnx-int8-dynamic"]) == {"onnx-int8-dynamic": "onnx-fp32"}


@pytest.mark.parametrize("flipped,status", [(0, PASSED), (1, MANUAL_REVIEW), (6, FAILED)])
def test_the_drop_is_judged_on_the_half_that_did_not_choose(flipped, status, tmp_path):
    # The quantized model agrees with full precision on the choosing half and is wrong on
    # `flipped` of the 200 held-back samples: 0 passes; 1 (0.5 points, but its interval
    # reaches past 1 point) is not beyond the noise; 6 (3 points) fails.
    from quantmill.data import Dataset
    from quantmill.metrics import get_metric, halves

    labels = np.arange(400) % 10
    reference = 5.0 * np.eye(10)[labels]
    outputs = reference.copy()
    flip = halves(len(labels))[1][:flipped]
    outputs[flip] = np.roll(outputs[flip], 1, axis=1)
    data = Dataset(tmp_path / "eval.npz", "0" * 64, {"pixels": np.zeros((400, 1), np.float32)}, labels)
    evaluation = get_metric("classification").evaluate(reference, outputs, data)
    assert evaluation.accuracy_drop == 0.0 and evaluation.samples == 200
    assert evaluation.confirmed.accuracy_drop == pytest.approx(flipped / 2) and evaluation.confirmed.samples == 200
    fast = _attempt(1, 0.0, 300)
    attempt = Attempt(1, fast.format, fast.options, fast.reason, fast.artifact, evaluation, fast.benchmark, "onnx-fp32",
                      fast.baseline)
    decision = decide(_verdict(), (attempt,), POINTS, "cpu")
    assert decision.status == status, decision.reasons
    assert f"confirmed at {flipped / 2:.2f} (95% CI" in decision.reasons[0]


def test_the_objective_says_which_speed_is_judged():
    # Against FP32: the same throughput at batch 32, twice it at batch 1, a quarter the size.
    def bench(batch1, batch32, size):
        rounds = {"1": [batch1 * (1 + 0.01 * k) for k in (-2, -1, 0, 1, 2)],
                  "32": [batch32 * (1 + 0.01 * k) for k in (2, -1, 0, -2, 1)]}
        return Benchmark(1.0, 1.0, {}, {"1": batch1, "32": batch32}, 1, 1, size, {}, 5, rounds)

    small = ExportedArtifact(Path("."), Path("m"), "0" * 64, 250)
    attempt = Attempt(1, "onnx-int8-static", OnnxStaticOptions(), "r", small, Evaluation("top1_accuracy", 98.0, 98.0, 0.0),
                      bench(200, 100, 250), "onnx-fp32", bench(100, 100, 1000))
    outcomes = {objective: decide(_verdict(), (attempt,), POINTS, "cpu", objective) for objective in OBJECTIVES}
    assert outcomes["throughput"].status == MANUAL_REVIEW and "no measurable speedup" in outcomes["throughput"].reasons[-1]
    assert outcomes["latency"].status == PASSED and "samples/s at batch 1" in outcomes["latency"].reasons[-1]
    assert outcomes["size"].status == PASSED and outcomes["size"].reasons[-1].startswith("size objective: 4.00x smaller")
    bigger = Attempt(1, attempt.format, attempt.options, "r", ExportedArtifact(Path("."), Path("m"), "0" * 64, 1000),
                     attempt.evaluation, attempt.benchmark, "onnx-fp32", attempt.baseline)
    assert "not smaller" in decide(_verdict(), (bigger,), POINTS, "cpu", "size").reasons[-1]


def test_a_search_ships_the_attempt_within_budget_that_best_serves_the_objective():
    from quantmill.gate import best_for_objective

    def sized(attempt, size):
        return Attempt(attempt.index, attempt.format, attempt.options, "r", ExportedArtifact(Path("."), Path("m"), "0" * 64, size),
                       attempt.evaluation, attempt.benchmark, "onnx-fp32", attempt.baseline)

    over, slow_small, fast = sized(_attempt(1, 2.0, 500), 10), sized(_attempt(2, 0.5, 150), 20), sized(_attempt(3, 0.8, 300), 40)
    search = best_for_objective((over, slow_small, fast), POINTS, "throughput")
    assert search.index == 3 and [r[0] for r in search.ranking] == [3, 2], "over budget is never in the running"
    assert search.why.startswith("the fastest of 2 attempts within budget") and "#3 onnx-int8-static 3.00x" in search.why
    assert best_for_objective((over, slow_small, fast), POINTS, "size").index == 2
    slower_small = sized(_attempt(2, 0.5, 50), 20)
    assert best_for_objective((slower_small, fast), POINTS, "size").index == 3, "smallest, but slower beyond the noise"
    assert best_for_objective((over,), POINTS, "throughput") is None
    # The gate judges the search's pick, not the first within budget.
    assert decide(_verdict(), (over, slow_small, fast), POINTS, "cpu", chosen_index=3).chosen_attempt == 3


def test_a_goal_ships_the_lowest_drop_that_reaches_it_and_the_gate_checks_it():
    from quantmill.errors import QuantmillError
    from quantmill.gate import best_for_objective
    from quantmill.goal import goal_for

    def sized(attempt, megabytes):
        return Attempt(attempt.index, attempt.format, attempt.options, "r",
                       ExportedArtifact(Path("."), Path("m"), "0" * 64, int(megabytes * 1e6)),
                       attempt.evaluation, attempt.benchmark, "onnx-fp32", attempt.baseline)

    # Within budget: 2 MB at 0.8 points, 3 MB at 0.2, 5 MB at 0.1; over budget: 1 MB at 2.0.
    attempts = (sized(_attempt(1, 2.0, 300), 1), sized(_attempt(2, 0.8, 300), 2), sized(_attempt(3, 0.2, 300), 3),
                sized(_attempt(4, 0.1, 300), 5))
    goal = goal_for(max_size_mb=4, search_seconds=60)
    search = best_for_objective(attempts, POINTS, "throughput", goal)
    assert search.index == 3 and search.goal_met and [r[0] for r in search.ranking] == [3, 2]
    assert search.why.startswith("the lowest drop of 2 attempts within budget that reach the goal of at most 4 MB")
    assert "short of the goal: #4 onnx-int8-static 5.00 MB" in search.why
    # Bits per weight: 2 MB of 1e6 parameters is 16 bits.
    assert best_for_objective(attempts, POINTS, "throughput", goal_for(max_bits_per_weight=20, search_seconds=1), 10**6).index == 2
    missed = best_for_objective(attempts, POINTS, "throughput", goal_for(max_size_mb=1.5, search_seconds=60))
    assert missed.index == 2 and not missed.goal_met and missed.why.startswith("none of 3 attempts within budget reaches")
    passed = decide(_verdict(), attempts, POINTS, "cpu", chosen_index=3, goal=goal)
    assert passed.status == PASSED and "goal at most 4 MB: reached, at 3.00 MB" in passed.reasons
    short = decide(_verdict(), attempts, POINTS, "cpu", chosen_index=2, goal=goal_for(max_size_mb=1.5, search_seconds=60))
    assert short.status == MANUAL_REVIEW and "goal at most 1.5 MB: not reached, at 2.00 MB" in short.reasons
    # Latency: 300 samples/s at batch 1 (the median round) is 3.33 ms a sample.
    rounds = {"1": [290.0, 300.0, 310.0], "32": [290.0, 300.0, 310.0]}
    timed = Attempt(3, "onnx-int8-static", OnnxStaticOptions(), "r", attempts[2].artifact, attempts[2].evaluation,
                    Benchmark(1.0, 1.0, {}, {"1": 300, "32": 300}, 1, 1, 1, {}, 3, rounds), "onnx-fp32", _bench(100))
    fast = decide(_verdict(), (timed,), POINTS, "cpu", chosen_index=3, goal=goal_for(max_latency_ms=3, search_seconds=1))
    assert fast.status == MANUAL_REVIEW and "goal at most 3 ms at batch 1: not reached, at 3.33 ms at batch 1" in fast.reasons
    for bad, message in (({"max_size_mb": 4, "max_latency_ms": 2}, "give one goal, not 2"),
                         ({"max_size_mb": -1}, "max_size_mb must be a positive number, not -1"),
                         ({"max_size_mb": 4}, "give search_seconds")):
        with pytest.raises(QuantmillError, match=message):
            goal_for(**{"search_seconds": 60, **bad} if "search" not in message else bad)
