"""The driver on its own, no Prefect: what it asks for, given what came of each request."""

from __future__ import annotations

from pathlib import Path

from quantmill.attempts import Attempt
from quantmill.exporters.artifact import ExportedArtifact
from quantmill.formats import Candidate
from quantmill.hardware import Hardware
from quantmill.isolation import WorkerCrashed
from quantmill.metrics import Budget, Evaluation
from quantmill.search import Driver, MakeAttempt, ScanSensitivity
from quantmill.sensitivity import GroupScore

CPU = Hardware("cpu", "test cpu", 2, ("avx2", "avx512_vnni"), "test runtime")
BUDGET = Budget(1.0, "points", "max_accuracy_drop")


def _attempt(request: MakeAttempt, drop: float) -> Attempt:
    artifact = ExportedArtifact(Path("/nowhere"), Path("/nowhere/model.onnx"), "0" * 64, 1000)
    return Attempt(request.index, request.step.format, request.step.options, request.step.reason, artifact,
                   Evaluation("top-1", 99.0, 99.0 - drop, drop), None, "onnx-fp32")


def _drive(driver: Driver, drops: dict, scores=()) -> list:
    """Run the driver, answering each attempt with the drop drops gives its format and
    calibration method (a missing key: the attempt fails); return what it asked for."""
    asked = []
    while (request := driver.next_request()) is not None:
        asked.append(request)
        if isinstance(request, ScanSensitivity):
            driver.scanned(scores)
            continue
        key = (request.step.format, getattr(request.step.options, "calibration_method", None),
               bool(getattr(request.step.options, "nodes_to_exclude", ())))
        if key in drops:
            driver.made(_attempt(request, drops[key]))
        else:
            driver.failed(request, WorkerCrashed("quantizing", -11, "a kernel crashed"))
    return asked


def test_the_first_attempt_within_budget_ends_the_plan():
    driver = Driver((Candidate("onnx-int8-static", "measured"), Candidate("onnx-fp16", "fallback")), BUDGET, CPU)
    asked = _drive(driver, {("onnx-int8-static", "minmax", False): 0.5})
    assert [r.step.format for r in asked] == ["onnx-int8-static"] and driver.judged() == ("1", "onnx-fp32")


def test_a_miss_climbs_the_ladder_then_scans_then_excludes_then_the_next_candidate():
    lines = []
    driver = Driver((Candidate("onnx-int8-static", "measured"), Candidate("onnx-fp16", "fallback")), BUDGET, CPU,
                    log=lines.append)
    scores = (GroupScore("conv1", ("Conv_0",), 3.0), GroupScore("fc", ("Gemm_0",), 0.5))
    drops = {("onnx-int8-static", "minmax", False): 3.0, ("onnx-int8-static", "entropy", False): 2.0,
             ("onnx-int8-static", "percentile", False): 2.5, ("onnx-int8-static", "entropy", True): 1.5,
             ("onnx-fp16", None, False): 0.0}
    asked = _drive(driver, drops, scores)
    kinds = [type(r).__name__ if isinstance(r, ScanSensitivity) else r.step.format for r in asked]
    assert kinds == ["onnx-int8-static"] * 3 + ["ScanSensitivity", "onnx-int8-static", "onnx-fp16"]
    scan = asked[3]
    assert scan.options.calibration_method == "entropy", "the scan starts from the best rung so far"
    assert asked[4].step.options.nodes_to_exclude == ("Conv_0",) and asked[4].step.options.calibration_method == "entropy"
    assert [a.index for a in driver.attempts] == [1, 2, 3, 4, 5] and driver.judged() == ("5", "onnx-fp32")
    assert driver.scores == scores and len(lines) == 5


def test_a_failed_attempt_is_recorded_with_its_signal_and_the_ladder_goes_on():
    driver = Driver((Candidate("gguf-q4_k_m", "measured"),), Budget(5.0, "%", "max_ppl_increase"), CPU)
    asked = _drive(driver, {("gguf-q5_k_m", None, False): 1.0})
    assert [r.describe() for r in asked] == ["gguf-q4_k_m Q4_K_M", "gguf-q4_k_m Q4_K_M with imatrix", "gguf-q5_k_m Q5_K_M"]
    assert [(f["index"], f["signal"], f["stderr_tail"]) for f in driver.failures] == [
        (1, "SIGSEGV", "a kernel crashed"), (2, "SIGSEGV", "a kernel crashed")]
    assert [a.index for a in driver.attempts] == [3]


def test_a_search_tries_every_candidate_then_the_moves_and_stops_when_time_is_up():
    clock = iter(range(0, 1000, 1))
    driver = Driver((Candidate("gguf-q4_k_m", "measured"), Candidate("gguf-q8_0", "fallback")),
                    Budget(5.0, "%", "max_ppl_increase"), CPU, search_seconds=100, clock=lambda: next(clock))
    asked = _drive(driver, {("gguf-q4_k_m", None, False): 1.0, ("gguf-q8_0", None, False): 0.1})
    described = [r.describe() for r in asked]
    assert described[:2] == ["gguf-q4_k_m Q4_K_M", "gguf-q8_0 Q8_0"]
    assert "gguf-q4_k_m Q4_K_M, ffn_(up|gate)=q3_k" in described and driver.judged() is None
    late = Driver((Candidate("gguf-q4_k_m", "measured"), Candidate("gguf-q8_0", "fallback")),
                  Budget(5.0, "%", "max_ppl_increase"), CPU, search_seconds=1, clock=iter([0, 5, 5, 5, 5, 5]).__next__)
    assert [r.describe() for r in _drive(late, {("gguf-q4_k_m", None, False): 1.0})] == ["gguf-q4_k_m Q4_K_M"]
