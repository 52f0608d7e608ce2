"""A hardware target is one entry: a new one added through quantmill/targets.py alone gets
its formats, its runtimes' settings, its measurements and its hardware identity."""

from __future__ import annotations

from pathlib import Path

from quantmill import targets
from quantmill.benchmark import benchmark_target
from quantmill.formats import baseline_for, offered, select_formats
from quantmill.hardware import local_cpu
from quantmill.models import get_kind, resolve_model
from quantmill.runtimes import get_runtime
from quantmill.zoo.digits import DigitsFiles


def test_a_target_added_as_one_entry_runs_through_selection_and_benchmark(digits: DigitsFiles, monkeypatch):
    # A CPU box that serves ONNX models only, e.g. an edge pool: one Target, nothing else.
    edge = targets.Target("edge", "edge", ("onnxruntime",), lambda: None, lambda: None,
                          onnxruntime_provider="CPUExecutionProvider")
    monkeypatch.setitem(targets.TARGETS, "edge", edge)
    assert targets.targets_for("edge", ["cpu", "edge"]) == (edge, targets.TARGETS["cpu"])
    assert {f.name for f in offered("onnx", edge)} == {"onnx-int8-static", "onnx-int8-dynamic", "onnx-fp16"}
    assert offered("hf-causal-lm", edge) == ()
    assert get_runtime("llama.cpp").unavailable(edge) == "target 'edge' does not offer llama.cpp"
    assert [c.format for c in select_formats("onnx", "cnn", edge, 1.0, "points", ())] == ["onnx-int8-dynamic", "onnx-fp16"]

    model = resolve_model(str(digits.model), "classification", Path(digits.model).parent / "work")
    data = get_kind(model.kind).load_data(model, digits.evaluation)
    measured = benchmark_target(edge, {"fp32": (baseline_for(model.kind), model.path)}, data, 0.05)
    assert measured.measured and measured.hardware.target == "edge"
    assert measured.hardware.identity() == local_cpu("x").identity()
    assert measured.benchmarks["fp32"].throughput["32"] > 0
