"""Recording a run in MLflow (a store in a temp dir): exactly once per flow run."""

from pathlib import Path

import pytest

from quantmill.tracking.client import client
from quantmill.tracking.registry import register_folder
from quantmill.tracking.runs import RECORD_KEY, record_run


def _report(sha256: str) -> dict:
    return {
        "model": {"name": "m", "version": "1", "sha256": "a" * 64, "uri": "models:/m/1", "source_format": "onnx",
                  "family": "mlp"},
        "task": "classification", "target": "cpu", "budget": {"value": 1.0, "unit": "points", "parameter": "max_accuracy_drop"},
        "hardware": {"description": "cpu: test"}, "evaluation_data": {"sha256": "b" * 64}, "candidates": [],
        "calibration": {"data_sha256": "c" * 64, "ks_statistic": 0.1, "ks_pvalue": 0.5, "in_range_fraction": 1.0},
        "baseline": {"benchmark": None},
        "attempts": [{"index": 1, "format": "onnx-int8-dynamic", "accuracy_drop": 0.0, "quantized_metric": 98.0,
                      "size_bytes": 10, "benchmark": None, "sha256": sha256}],
        "gate": {"status": "passed", "chosen_attempt": 1},
    }


def test_a_retry_after_registration_registers_nothing_twice(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "model.bin").write_bytes(b"weights")
    report_path = tmp_path / "report.json"
    report_path.write_text("{}")

    def register(name: str, uri: str) -> str:
        return register_folder(name, uri, mlflow.active_run().info.run_id)

    original = MlflowClient.set_registered_model_alias
    calls = []

    def flaky_alias(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise MlflowException("503 from the tracking server", error_code="TEMPORARILY_UNAVAILABLE")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", flaky_alias)
    with pytest.raises(MlflowException):
        record_run(_report("d" * 64), report_path, artifact, "m-quantized", "cpu", register, key="flow-run-1")
    done = record_run(_report("d" * 64), report_path, artifact, "m-quantized", "cpu", register, key="flow-run-1")

    registry = client()
    versions = registry.search_model_versions("name = 'm-quantized'")
    assert [str(v.version) for v in versions] == [done.version]
    assert str(registry.get_model_version_by_alias("m-quantized", "cpu").version) == done.version
    assert registry.get_model_version("m-quantized", done.version).tags["artifact_sha256"] == "d" * 64
    runs = registry.search_runs([registry.get_experiment_by_name("quantmill").experiment_id],
                                filter_string=f"tags.`{RECORD_KEY}` = 'flow-run-1'")
    assert [r.info.run_id for r in runs] == [done.run_id] and runs[0].info.status == "FINISHED"

    other = record_run(_report("e" * 64), report_path, artifact, "m-quantized", "cpu", register, key="flow-run-2")
    assert other.version != done.version and other.run_id != done.run_id
    assert Path(report_path).exists()
