from pathlib import Path

from quantmill.attempts import Attempt
from quantmill.benchmark import Benchmark
from quantmill.calibration import CalibrationVerdict
from quantmill.evaluation import Evaluation
from quantmill.exporters.artifact import ExportedArtifact
from quantmill.gate import FAILED, MANUAL_REVIEW, PASSED, decide
from quantmill.quantizers.onnx_runtime import QuantizeOptions


def _verdict(status="pass"):
    return CalibrationVerdict(status, 100, 100, 0.1, 0.5, 4, 0, "x", 1.0, 1.0, "a", "b", ("why",) if status != "pass" else ())


def _bench(throughput):
    return Benchmark(1.0, 1.0, {}, {"1": throughput, "32": throughput}, 1, 1, 1, {}, 1)


def _attempt(index, drop, throughput):
    artifact = ExportedArtifact(Path("."), Path("m.onnx"), "0" * 64, 1)
    evaluation = Evaluation("top1_accuracy", 98.0, 98.0 - drop, drop)
    return Attempt(index, QuantizeOptions("onnx-int8-static", "minmax"), "r", artifact, evaluation, _bench(throughput))


def test_first_attempt_within_budget_and_faster_passes():
    decision = decide(_verdict(), (_attempt(1, 2.0, 300), _attempt(2, 0.5, 200)), _bench(100), 1.0, "cpu")
    assert decision.status == PASSED and decision.chosen_attempt == 2
    assert "2.00x the full-precision baseline's samples/s at batch 32" in decision.reasons[-1]


def test_no_attempt_within_budget_fails():
    decision = decide(_verdict(), (_attempt(1, 2.0, 300),), _bench(100), 1.0, "cpu")
    assert decision.status == FAILED and decision.chosen_attempt is None
    assert "best was onnx-int8-static at 2.00 pts" in decision.reasons[0]


def test_slower_than_fp32_or_warned_calibration_needs_review():
    assert decide(_verdict(), (_attempt(1, 0.1, 90),), _bench(100), 1.0, "cpu").status == MANUAL_REVIEW
    assert decide(_verdict("warn"), (_attempt(1, 0.1, 300),), _bench(100), 1.0, "cpu").status == MANUAL_REVIEW


def test_failed_calibration_fails_whatever_the_attempts():
    assert decide(_verdict("fail"), (_attempt(1, 0.0, 300),), _bench(100), 1.0, "cpu").status == FAILED
