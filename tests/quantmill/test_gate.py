from pathlib import Path

from quantmill.attempts import Attempt
from quantmill.calibration import CalibrationVerdict
from quantmill.exporters.artifact import ExportedArtifact
from quantmill.formats.onnx import OnnxStaticOptions
from quantmill.gate import FAILED, MANUAL_REVIEW, PASSED, decide
from quantmill.metrics import Budget, Evaluation, budget_for
from quantmill.runtimes.onnxruntime import Benchmark

POINTS = Budget(1.0, "points", "max_accuracy_drop")


def _verdict(status="pass"):
    return CalibrationVerdict(status, 100, 100, 0.1, 0.5, 4, 0, "x", 1.0, 1.0, "a", "b", ("why",) if status != "pass" else ())


def _bench(throughput):
    return Benchmark(1.0, 1.0, {}, {"1": throughput, "32": throughput}, 1, 1, 1, {}, 1)


def _attempt(index, drop, throughput):
    artifact = ExportedArtifact(Path("."), Path("m"), "0" * 64, 1)
    evaluation = Evaluation("top1_accuracy", 98.0, 98.0 - drop, drop)
    return Attempt(index, "onnx-int8-static", OnnxStaticOptions(), "r", artifact, evaluation, _bench(throughput),
                   "onnx-fp32", _bench(100))


def test_first_attempt_within_budget_and_faster_passes():
    decision = decide(_verdict(), (_attempt(1, 2.0, 300), _attempt(2, 0.5, 200)), POINTS, "cpu")
    assert decision.status == PASSED and decision.chosen_attempt == 2
    assert "within the budget of 1 points" in decision.reasons[0]
    assert "2.00x the full-precision baseline's samples/s at batch 32 (onnx-fp32, same runtime)" in decision.reasons[-1]


def test_no_attempt_within_budget_fails_in_the_budgets_unit():
    decision = decide(_verdict(), (_attempt(1, 2.0, 300),), POINTS, "cpu")
    assert decision.status == FAILED and decision.chosen_attempt is None
    assert "best was onnx-int8-static at 2.00 points" in decision.reasons[0]
    percent = decide(_verdict(), (_attempt(1, 2.0, 300),), budget_for("language-modeling", None, 1.5), "cpu")
    assert "budget of 1.5 % perplexity increase" in percent.reasons[0]


def test_slower_than_fp32_or_warned_calibration_needs_review():
    assert decide(_verdict(), (_attempt(1, 0.1, 90),), POINTS, "cpu").status == MANUAL_REVIEW
    assert decide(_verdict("warn"), (_attempt(1, 0.1, 300),), POINTS, "cpu").status == MANUAL_REVIEW


def test_failed_calibration_fails_whatever_the_attempts():
    assert decide(_verdict("fail"), (_attempt(1, 0.0, 300),), POINTS, "cpu").status == FAILED


def test_speed_is_judged_against_full_precision_on_the_same_runtime():
    from quantmill.formats import baselines_for

    assert baselines_for("hf-causal-lm", ["gguf-q4_k_m", "awq-w4a16"]) == {
        "gguf-q4_k_m": "gguf-f16", "awq-w4a16": "hf-checkpoint",
    }
    assert baselines_for("hf-encoder", ["onnx-int8-dynamic"]) == {"onnx-int8-dynamic": "onnx-fp32"}
