"""The quantize-model flow end to end on real models, an ephemeral Prefect API and an MLflow
SQLite store in a temp dir."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from flows.cli import EXIT_CODES, main
from quantmill.hashing import sha256_file
from quantmill.metrics import halves
from quantmill.models import register_source_model
from quantmill.report import render_summary
from quantmill.tracking.client import client
from tests.browser import check_report_html

pytestmark = pytest.mark.usefixtures("prefect_api")


def _cli(*args) -> int:
    return main(["run", *map(str, args), "--benchmark-seconds", "0.3"])


def test_digits_from_the_registry_end_to_end(digits, tmp_path, capsys):
    version = register_source_model(digits.model, "digits-cnn")
    out = tmp_path / "out"
    code = _cli(f"models:/digits-cnn/{version}", "--task", "classification", "--calibration-data", digits.calibration,
                "--eval-data", digits.evaluation, "--max-accuracy-drop", "1.0", "--out", out)
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    gate = report["gate"]
    assert code == EXIT_CODES[gate["status"]]
    assert "gate" in printed and gate["status"].upper() in printed

    assert report["model"]["name"] == "digits-cnn" and report["model"]["version"] == version
    assert len(report["model"]["sha256"]) == 64 and report["model"]["family"] == "cnn"
    assert report["calibration"]["status"] == "pass"
    assert 0 <= report["calibration"]["ks_statistic"] <= 1 and 0 <= report["calibration"]["ks_pvalue"] <= 1
    assert report["candidates"][0]["format"] == "onnx-int8-static"

    # The artifact, loaded back, reproduces the reported accuracy on each half of the
    # evaluation data: the half that chose it and the half held back to confirm it.
    attempt = report["attempts"][0]
    assert attempt["format"] == "onnx-int8-static" and attempt["accuracy_drop"] <= 1.0
    assert sha256_file(Path(attempt["path"])) == attempt["sha256"]
    assert Path(attempt["path"]).is_relative_to(out / "runs")
    with np.load(digits.evaluation) as data:
        session = ort.InferenceSession(attempt["path"], providers=["CPUExecutionProvider"])
        right = session.run(None, {"pixels": data["pixels"]})[0].argmax(1) == data["labels"]
    choose, confirm = halves(len(right))
    confirmation = attempt["confirmation"]
    assert 100.0 * np.mean(right[choose]) == pytest.approx(attempt["quantized_metric"]) and attempt["samples"] == len(choose)
    assert 100.0 * np.mean(right[confirm]) == pytest.approx(confirmation["quantized_metric"])
    low, high = confirmation["drop_interval"]
    assert low <= confirmation["accuracy_drop"] <= high and confirmation["samples"] == len(confirm)
    assert f"confirmed at {confirmation['accuracy_drop']:.2f}" in gate["reasons"][0]
    metadata = json.loads((Path(attempt["path"]).parent / "metadata.json").read_text())
    assert metadata["calibration_data_sha256"] == report["calibration"]["data_sha256"]
    assert metadata["source"]["sha256"] == report["model"]["sha256"]
    assert metadata["tool_versions"]["onnxruntime"] == ort.__version__
    bench = attempt["benchmark"]
    assert bench["throughput"]["1"] > 0 and bench["latency_ms"]["32"]["p99"] >= bench["latency_ms"]["32"]["p50"]
    assert attempt["size_ratio_vs_fp32"] < 0.5
    # 5 interleaved rounds, more for the judged attempt and its baseline while within the noise.
    assert 5 <= len(bench["throughput_rounds"]["32"]) == bench["rounds"] <= 15
    low, high = attempt["speedup_ci"]
    assert low <= attempt["speedup_vs_baseline"] * 1.05 and high >= attempt["speedup_vs_baseline"] * 0.95

    registry = client()
    run = registry.get_run(report["mlflow"]["run_id"])
    assert run.data.tags["quantmill.gate"] == gate["status"]
    # report.html beside report.json, with the MLflow run, and as a person sees it.
    assert f"report.html: {(out / 'report.html').resolve()}" in printed
    assert {"report.json", "report.html"} <= {f.path for f in registry.list_artifacts(run.info.run_id)}
    features = report["calibration"]["ks_features"]
    assert len(features) == report["calibration"]["features_tested"]
    assert max(features, key=lambda f: f[1])[:2] == [report["calibration"]["worst_feature"], report["calibration"]["ks_statistic"]]
    check_report_html(out)
    if gate["status"] == "passed":
        registered = registry.get_model_version_by_alias("digits-cnn-quantized", "cpu")
        assert registered.tags["source_version"] == version and registered.tags["format"] == "onnx-int8-static"
        assert registered.tags["gate_status"] == "passed"
    else:
        assert gate["status"] == "manual_review"
        assert any(r.startswith(("slower than full precision", "no measurable speedup", "the confirmed drop's interval"))
                   for r in gate["reasons"])
        assert registry.search_registered_models("name = 'digits-cnn-quantized'") == []

    # The same version again into the same folder: a run of its own, the first one's files untouched.
    _cli(f"models:/digits-cnn/{version}", "--task", "classification", "--calibration-data", digits.calibration,
         "--eval-data", digits.evaluation, "--max-accuracy-drop", "1.0", "--out", out)
    second = json.loads((out / "report.json").read_text())
    assert second["mlflow"]["run_id"] != report["mlflow"]["run_id"] and len(list((out / "runs").iterdir())) == 2
    assert Path(second["attempts"][0]["path"]).parent.parent != Path(attempt["path"]).parent.parent
    assert sha256_file(Path(attempt["path"])) == attempt["sha256"]
    assert json.loads((Path(attempt["path"]).parents[2] / "report.json").read_text())["mlflow"] == report["mlflow"]

    # Each run logged its own measured rows; `quantmill table` aggregates them across runs.
    capsys.readouterr()
    assert main(["table", "--runs-only"]) == 0
    printed = capsys.readouterr().out
    assert "0 shipped rows, 2 rows logged by runs" in printed
    row = next(line.split() for line in printed.splitlines() if "onnx-int8-static" in line)
    speedups = sorted(r["targets"][0]["speedup_vs_baseline"]["1"] if r["targets"] else r["attempts"][0]["speedup_vs_baseline"]
                      for r in (report, second))
    assert row[:3] == ["cnn", "cpu", "onnx-int8-static"] and row[-1] == "2"
    assert [float(v) for v in row[-3:-1]] == [pytest.approx(s, abs=1e-3) for s in speedups]


def test_shifted_calibration_data_stops_the_run_before_quantizing(digits, tmp_path):
    with np.load(digits.calibration) as data:
        shifted = tmp_path / "shifted.npz"
        np.savez(shifted, pixels=np.clip(data["pixels"] * 0.5, 0, 1), labels=data["labels"])
    out = tmp_path / "out"
    code = _cli(digits.model, "--task", "classification", "--calibration-data", shifted,
                "--eval-data", digits.evaluation, "--out", out)
    report = json.loads((out / "report.json").read_text())
    assert code == EXIT_CODES["failed"]
    assert report["calibration"]["status"] == "fail"
    assert report["attempts"] == [] and not list(out.glob("runs/*/attempts"))
    assert "calibration data failed validation" in report["gate"]["reasons"][0]
    assert client().search_registered_models() == []


def test_minilm_encoder_directory(text_sets, tmp_path):
    from quantmill.zoo.minilm import minilm_dir

    out = tmp_path / "out"
    code = _cli(minilm_dir(), "--task", "embedding", "--calibration-data", text_sets[0], "--eval-data", text_sets[1],
                "--max-accuracy-drop", "15", "--out", out)
    report = json.loads((out / "report.json").read_text())
    assert code == EXIT_CODES[report["gate"]["status"]]
    assert report["model"]["family"] == "transformer-encoder" and report["model"]["source_format"] == "hf-encoder"
    assert report["model"]["architecture"] == "BertModel" and "exported to ONNX in FP32" in report["model"]["reference"]
    attempt = report["attempts"][0]
    assert attempt["format"] == "onnx-int8-dynamic"
    assert attempt["metric_name"] == "retrieval_agreement_at_10" and attempt["baseline_metric"] == 100.0
    assert attempt["secondary_metrics"]["mean_cosine_similarity"] > 0.97
    assert attempt["accuracy_drop"] == pytest.approx(100.0 - attempt["quantized_metric"])
    assert len(attempt["worst_disagreements"]) == 10 and attempt["worst_disagreements"][0]["text"]


@pytest.mark.slow
def test_a_miss_escalates_through_calibration_methods_sensitivity_and_fallback(text_sets, tmp_path):
    """Static INT8 of MiniLM misses a tight budget here; the report shows every rung."""
    from quantmill.zoo.minilm import minilm_dir

    table = tmp_path / "table"
    table.mkdir()
    (table / "only_static.csv").write_text(
        "family,hardware,format,accuracy_drop,compression,speedup,n_measurements,source\n"
        "transformer-encoder,cpu,onnx-int8-static,0.5,3.9,1.4,1,test row\n"
    )
    out = tmp_path / "out"
    _cli(minilm_dir(), "--task", "embedding", "--calibration-data", text_sets[0], "--eval-data", text_sets[1],
         "--max-accuracy-drop", "5", "--benchmark-table", table, "--out", out, "--no-register")
    report = json.loads((out / "report.json").read_text())
    attempts = report["attempts"]
    static = [a for a in attempts if a["format"] == "onnx-int8-static"]
    assert [a["options"]["calibration_method"] for a in static[:3]] == ["minmax", "entropy", "percentile"]
    assert all(a["accuracy_drop"] > 5 for a in static[:3])
    assert "trying entropy calibration" in static[1]["reason"]

    ranking = report["sensitivity"]
    assert len(ranking) == 6 and all("layer." in g["group"] for g in ranking)
    assert [g["accuracy_drop"] for g in ranking] == sorted((g["accuracy_drop"] for g in ranking), reverse=True)
    kept = [a for a in static if a["options"]["nodes_to_exclude"]]
    assert kept and ranking[0]["group"] in kept[0]["reason"]
    assert set(ranking[0]["nodes"]) == set(kept[0]["options"]["nodes_to_exclude"])

    last = attempts[-1]
    if last["format"] == "onnx-fp16":
        assert all(a["accuracy_drop"] > 5 for a in static) and "last resort" in last["reason"]
    assert last["accuracy_drop"] <= 5 and report["gate"]["chosen_attempt"] == last["index"]


def test_the_chosen_artifact_goes_to_s3_when_configured(digits, tmp_path, s3_server, monkeypatch):
    _, location = s3_server
    monkeypatch.setenv("QUANTMILL_S3_BUCKET", location.bucket)
    monkeypatch.setenv("QUANTMILL_S3_ENDPOINT_URL", location.endpoint_url)
    out = tmp_path / "out"
    _cli(digits.model, "--task", "classification", "--calibration-data", digits.calibration,
         "--eval-data", digits.evaluation, "--out", out, "--no-register")
    report = json.loads((out / "report.json").read_text())
    chosen = next(a for a in report["attempts"] if a["index"] == report["gate"]["chosen_attempt"])
    uri = report["storage"]["s3_uri"]
    prefix = uri.removeprefix(f"s3://{location.bucket}/")
    # Under the flow run's id, which also names the run's output folder: runs never share an upload.
    run_id = Path(chosen["path"]).parents[2].name
    assert prefix == f"quantmill/digits_cnn/{report['model']['sha256'][:12]}/{chosen['format']}/{run_id}"
    from quantmill.storage import s3_client

    listed = s3_client(location).list_objects_v2(Bucket=location.bucket, Prefix=prefix + "/")["Contents"]
    assert {o["Key"].rsplit("/", 1)[1] for o in listed} == {"model.onnx", "model.onnx.sha256", "metadata.json", "manifest.json"}


def test_the_sensitivity_scan_as_a_command(digits, tmp_path, capsys, quantmill_home):
    import pandas as pd

    from quantmill.formats.onnx import preprocessed
    from quantmill.inspection import inspect_model

    out = tmp_path / "scan"
    args = ("sensitivity", str(digits.model), "--task", "classification", "--calibration-data", str(digits.calibration),
            "--eval-data", str(digits.evaluation), "--out", str(out))
    assert main(list(args)) == 0
    printed = capsys.readouterr().out
    assert "onnx-int8-static minmax" in printed and "top1_accuracy drop in points on 270 samples" in printed
    table = pd.read_csv(out / "sensitivity.csv")
    assert list(table["rank"]) == list(range(1, len(table) + 1)) and list(table["drop"]) == sorted(table["drop"], reverse=True)
    scanned = [node for names in table["node_names"] for node in names.split()]
    graph = inspect_model(preprocessed(digits.model, quantmill_home / "work" / "pre")).quantizable_nodes
    assert sorted(scanned) == sorted(graph), "each quantizable node is scanned in exactly one group"
    assert json.loads((out / "sensitivity.json").read_text())["format"] == "onnx-int8-static"

    assert main([*args[:-2], "--format", "gguf-q4_k_m"]) == 2
    assert "gguf-q4_k_m has no sensitivity scan for onnx models; formats that do: onnx-int8-static" in \
        capsys.readouterr().err


@pytest.mark.slow
def test_a_search_tries_every_candidate_and_ships_the_fastest_measured_again(digits, tmp_path):
    out = tmp_path / "out"
    _cli(digits.model, "--task", "classification", "--calibration-data", digits.calibration, "--eval-data",
         digits.evaluation, "--max-accuracy-drop", "5", "--search-seconds", "600", "--out", out, "--no-register")
    report = json.loads((out / "report.json").read_text())
    assert {a["format"] for a in report["attempts"]} == {c["format"] for c in report["candidates"]}, "every candidate tried"
    search = report["search"]
    within = {a["index"] for a in report["attempts"] if a["within_budget"]}
    assert {r["index"] for r in search["ranking"]} == within and len(within) >= 2
    figures = [r["figure"] for r in search["ranking"]]
    assert figures == sorted(figures, reverse=True)
    assert report["gate"]["chosen_attempt"] == search["chosen_attempt"] == search["ranking"][0]["index"]
    # The pick is measured again: the gate's rounds are not the ones the pick was made on.
    chosen = next(a for a in report["attempts"] if a["index"] == search["chosen_attempt"])
    first_pass = report["targets"][0]["benchmarks"][str(chosen["index"])]["throughput_rounds"]
    assert chosen["benchmark"]["throughput_rounds"] != first_pass
    assert "search    chose #" in render_summary(report)
    # A size goal that the largest attempt within budget misses: the lowest drop among the
    # rest ships, and the gate says the goal was reached.
    sizes = {a["index"]: a["size_bytes"] for a in report["attempts"] if a["within_budget"]}
    limit_mb = (max(sizes.values()) - 1) / 1e6
    drops = {a["index"]: a["accuracy_drop"] for a in report["attempts"] if a["index"] in sizes and sizes[a["index"]] <= limit_mb * 1e6}
    goal_out = tmp_path / "goal"
    _cli(digits.model, "--task", "classification", "--calibration-data", digits.calibration, "--eval-data",
         digits.evaluation, "--max-accuracy-drop", "5", "--search-seconds", "600", "--max-size-mb", str(limit_mb),
         "--out", goal_out, "--no-register")
    goal = json.loads((goal_out / "report.json").read_text())
    assert goal["search"]["goal"] == f"at most {limit_mb:g} MB" and goal["search"]["goal_met"]
    assert goal["search"]["chosen_attempt"] == min(drops, key=lambda i: (drops[i], sizes[i]))
    assert any(r.startswith(f"goal at most {limit_mb:g} MB: reached") for r in goal["gate"]["reasons"])
