"""quantmill as deployed: a Prefect server with process workers on pools cpu and gpu, an
MLflow tracking server whose artifacts live on an S3 API server, and the registry webhook
receiver, all started here on loopback. One model version's life, in order: registered ->
quantized once by the trigger; the same event again -> nothing new; re-run -> from cache;
a pool without a worker -> not benchmarked; S3 down mid-run -> survived; the monthly sweep
-> the drifted model re-quantized, the other left alone. A fault campaign, and a worker lost
mid-run -> Crashed, then re-run from cache. Then a language model's: the same
flow through its own trigger, benchmarked on the cpu pool, and re-quantized by the sweep
when its fresh text drifted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.stack import SECRET, Stack, copy_logs, start_stack

pytestmark = pytest.mark.orchestration


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    stack = start_stack(root)
    yield stack
    stack.close()


@pytest.fixture
def live(stack, monkeypatch, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow_url)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.setenv(key, stack.env[key])
    with temporary_settings({PREFECT_API_URL: stack.prefect_url}):
        try:
            yield stack
        finally:
            copy_logs(stack, tmp_path / "logs")


def _deployment_runs(client, deployment: str = "quantize-model") -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])))


def _wait_for(predicate, seconds: float, what: str, stack: Stack):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"{what} not within {seconds} s; worker log tail:\n{stack.log('worker-cpu')[-4000:]}\n"
                         f"webhook log tail:\n{stack.log('webhook')[-2000:]}")


def _finished(client, run_id):
    run = client.read_flow_run(run_id)
    return run if run.state and run.state.is_final() else None


def _task_states(client, run_id) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), limit=200,
                                 sort="EXPECTED_START_TIME_ASC")
    return {r.name.rsplit("-", 1)[0] + f"#{i}": r.state.name for i, r in enumerate(runs)}


def _register(digits, name: str, stack: Stack, model: Path | None = None) -> str:
    from quantmill.models import register_source_model
    from quantmill.tracking.registry import tag_model_version

    version = register_source_model(model or digits.model, name)
    for key, value in {"quantmill.task": "classification", "quantmill.calibration_data": str(digits.calibration),
                       "quantmill.eval_data": str(digits.evaluation)}.items():
        tag_model_version(name, version, key, value)
    return version


def test_the_monthly_sweep_is_scheduled(live):
    """The scheduler service turns the sweep's cron schedule into runs (it did not under
    SQLAlchemy 2.1, which constraints.txt now keeps out)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        runs = _wait_for(lambda: [r for r in _deployment_runs(prefect, "recalibration-sweep") if r.state.is_scheduled()],
                         180, "scheduled recalibration-sweep runs", live)
    assert all(r.expected_start_time.day == 1 and r.expected_start_time.hour == 3 for r in runs)


def test_registry_to_production_and_the_monthly_sweep(live, digits, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from quantmill.registry_events import REQUESTED
    from quantmill.storage import S3Location, s3_client
    from quantmill.tracking.client import client as mlflow_client
    from quantmill.tracking.registry import model_version_tags, tag_model_version
    from quantmill.tracking.webhooks import ensure_registry_webhook

    stack = live
    ensure_registry_webhook(stack.webhook_url, SECRET, ("model_version.created", "model_version_tag.set"))
    registry = mlflow_client()

    with get_client(sync_client=True) as prefect:
        # Registering a version with its quantmill tags starts exactly one quantize run,
        # which completes and moves the alias.
        version = _register(digits, "digits-a", stack)
        runs = _wait_for(lambda: _deployment_runs(prefect), 120, "a quantize-model run", stack)
        first = _wait_for(lambda: _finished(prefect, runs[0].id), 600, "the triggered run finishing", stack)
        assert first.state.is_completed(), first.state.message
        assert first.parameters["model"] == f"models:/digits-a/{version}"
        report = json.loads((Path(stack.env["QUANTMILL_HOME"]) / "out" / f"digits-a-v{version}" / "report.json").read_text())
        assert report["gate"]["status"] in ("passed", "manual_review")
        targets = {t["target"]: t for t in report["targets"]}
        assert targets["cpu"]["status"] == "measured" and "cpu" in targets["cpu"]["hardware"]
        # The gpu worker is this CPU-only machine: it says so rather than measuring.
        assert targets["gpu"]["status"] == "not benchmarked" and "CUDAExecutionProvider" in targets["gpu"]["reason"]
        if report["gate"]["status"] == "passed":
            assert registry.get_model_version_by_alias("digits-a-quantized", "cpu").version == report["mlflow"]["version"]
        event_id = model_version_tags("digits-a", version)[REQUESTED]

        # The same event again, three ways: MLflow reporting the tags once more, a replayed
        # webhook delivery, and the Prefect event itself re-sent. Nothing new starts.
        tag_model_version("digits-a", version, "quantmill.task", "classification")
        assert _deliver_again(stack, "digits-a", version) == 200
        _emit_again(event_id, first.parameters, version)
        time.sleep(20)
        assert [r.id for r in _deployment_runs(prefect)] == [first.id]

        # Re-run unchanged (as from the UI) with the gpu pool's worker gone: the expensive
        # steps come from cache, and gpu is reported not benchmarked after a bounded wait.
        stack.stop("worker-gpu")
        again = run_deployment("quantize-model/quantize-model", parameters={**first.parameters, "worker_wait_seconds": 15},
                               timeout=600)
        assert again.state.is_completed(), again.state.message
        states = _task_states(prefect, again.id)
        assert {s for k, s in states.items() if k.startswith(("quantize#", "evaluate#"))} == {"Cached"}, states
        s3 = s3_client(S3Location("artifacts", "quantmill", stack.env["QUANTMILL_S3_ENDPOINT_URL"]))
        records = s3.list_objects_v2(Bucket="artifacts", Prefix="quantmill/prefect-results/")
        assert any("quantize-" in o["Key"] for o in records.get("Contents", [])), "cache records not on S3"
        rerun = again.state.result()
        gpu = next(t for t in rerun["targets"] if t["target"] == "gpu")
        assert gpu["status"] == "not benchmarked" and "no worker on work pool 'gpu'" in gpu["reason"]
        stack.start_worker("gpu")

        # S3 stopped for a few seconds just as a new version's run starts (the run fetches
        # the model through MLflow's artifact proxy from S3): retries carry it through.
        _register(digits, "digits-b", stack)
        run = _wait_for(lambda: [r for r in _deployment_runs(prefect) if r.id not in (first.id, again.id)], 120,
                        "the digits-b run", stack)[0]
        _wait_for(lambda: prefect.read_flow_run(run.id).state.is_running(), 120, "the digits-b run starting", stack)
        stack.s3_server.stop()
        time.sleep(6)
        stack.s3_server.start()
        done = _wait_for(lambda: _finished(prefect, run.id), 600, "the digits-b run finishing", stack)
        assert done.state.is_completed(), done.state.message
        b_report = done.state.result()
        # Nothing lost or half-written: the uploaded artifact matches its manifest.
        uri = b_report["storage"]["s3_uri"]
        prefix = uri.removeprefix("s3://artifacts/")
        manifest = json.loads(s3.get_object(Bucket="artifacts", Key=f"{prefix}/manifest.json")["Body"].read())
        assert manifest["files"]
        for name, digest in manifest["files"].items():
            body = s3.get_object(Bucket="artifacts", Key=f"{prefix}/{name}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == digest
        logged = [a.path for a in registry.list_artifacts(b_report["mlflow"]["run_id"])]
        assert "report.json" in logged and "calibration" in logged

        # The monthly sweep: both versions in production; digits-a's recent data is more of
        # the same digits, digits-b's is the same digits at half brightness.
        drifted = tmp_path / "digits-dim.npz"
        with np.load(digits.evaluation) as data:
            np.savez(drifted, pixels=(data["pixels"] * 0.5).astype(np.float32), labels=data["labels"])
        for name, report_of, fresh in (("digits-a", report, digits.evaluation), ("digits-b", b_report, drifted)):
            quantized = f"{name}-quantized"
            shipped = _shipped_version(quantized, report_of)
            registry.set_registered_model_alias(quantized, "production", shipped)
            tag_model_version(quantized, shipped, "quantmill.recent_data", str(fresh))
        sweep = run_deployment("recalibration-sweep/recalibration-sweep", parameters={"benchmark_on": None}, timeout=900)
        assert sweep.state.is_completed(), sweep.state.message
        found = {v["name"]: v for v in sweep.state.result()["versions"]}
        assert not found["digits-a-quantized"]["drift"]["drifted"] and not found["digits-a-quantized"]["requantized"]
        assert found["digits-b-quantized"]["drift"]["drifted"] and found["digits-b-quantized"]["requantized"]
        assert found["digits-b-quantized"]["drift"]["ks_statistic"] > 0.3
        assert found["digits-b-quantized"]["gate_status"] in ("passed", "manual_review")


def test_fault_campaign(live, digits):
    """Five versions registered at once; one re-tagged during its run; MLflow restarted while
    they run: every run completes with its own artifact, one registered version per passing
    run and one MLflow run per flow run; and registry events still arrive after the restart."""
    from prefect.client.orchestration import get_client

    from quantmill.exporters.artifact import verify_artifact
    from quantmill.tracking.client import EXPERIMENT
    from quantmill.tracking.client import client as mlflow_client
    from quantmill.tracking.registry import tag_model_version
    from quantmill.tracking.runs import RECORD_KEY
    from quantmill.tracking.webhooks import ensure_registry_webhook
    from tests.stack import wait_http

    stack = live
    ensure_registry_webhook(stack.webhook_url, SECRET, ("model_version.created", "model_version_tag.set"))
    registry = mlflow_client()
    with get_client(sync_client=True) as prefect:
        before = {r.id for r in _deployment_runs(prefect)}

        def new_runs() -> list:
            return [r for r in _deployment_runs(prefect) if r.id not in before]

        def at_least(n: int) -> list | None:
            found = new_runs()
            return found if len(found) >= n else None

        def all_finished() -> list | None:
            runs = [_finished(prefect, r.id) for r in new_runs()]
            return runs if runs and all(runs) else None

        # Five models, so five new versions (the same weights under one name would be one version).
        uris = [f"models:/{name}/{_register(digits, name, stack)}" for name in (f"digits-burst-{i}" for i in range(5))]
        started = _wait_for(lambda: at_least(5), 180, "5 runs", stack)
        first = next(r for r in started if r.parameters["model"] == uris[0])
        _wait_for(lambda: prefect.read_flow_run(first.id).state.is_running(), 300, "the first burst run starting", stack)
        # The budget tag changed while its run is going: a new request, a run of its own.
        tag_model_version("digits-burst-0", uris[0].rsplit("/", 1)[1], "quantmill.max_accuracy_drop", "2")
        _wait_for(lambda: at_least(6), 120, "the re-tagged version's run", stack)
        stack.restart("mlflow-server")
        wait_http(f"{stack.mlflow_url}/health", 120, stack.processes["mlflow-server"])
        done = _wait_for(all_finished, 1500, "the burst finishing", stack)

        assert len(done) == 6 and all(r.state.is_completed() for r in done), [(r.name, r.state.message) for r in done]
        per_version = {uri: [r for r in done if r.parameters["model"] == uri] for uri in uris}
        assert [len(per_version[uri]) for uri in uris] == [2, 1, 1, 1, 1]
        assert sorted(float(r.parameters["max_accuracy_drop"]) for r in per_version[uris[0]]) == [1.0, 2.0]
        reports = [r.state.result() for r in done]
        folders = set()
        for report in reports:
            chosen = next(a for a in report["attempts"] if a["index"] == report["gate"]["chosen_attempt"])
            verify_artifact(Path(chosen["path"]), chosen["sha256"])
            folders.add(Path(chosen["path"]).parent.parent)
        assert len(folders) == 6, "two runs shared an output folder"
        experiment = registry.get_experiment_by_name(EXPERIMENT).experiment_id
        for run in done:
            assert len(registry.search_runs([experiment], f"tags.`{RECORD_KEY}` = '{run.id}'")) == 1
        registered = [v for i in range(5) for v in registry.search_model_versions(f"name = 'digits-burst-{i}-quantized'")]
        passed = [r for r in reports if r["gate"]["status"] == "passed"]
        assert sorted(v.run_id for v in registered) == sorted(r["mlflow"]["run_id"] for r in passed)
        assert all(v.tags.get("gate_status") == "passed" for v in registered)

        # Registry events still reach quantmill after MLflow's restart (its webhook secret survives it).
        before |= {r.id for r in done}
        _register(digits, "digits-after-restart", stack)
        (after,) = _wait_for(new_runs, 180, "a run for a version registered after the restart", stack)
        assert _wait_for(lambda: _finished(prefect, after.id), 600, "that run finishing", stack).state.is_completed()


def test_a_worker_lost_mid_run_is_marked_crashed_and_rerun_from_cache(live, digits, tmp_path):
    """The cpu worker and the run's own processes killed mid-run, as a lost machine would end
    them: Prefect's crash detection (`quantmill crash-detection`: no heartbeat for 90 s) marks
    the run Crashed, and a re-run with the same parameters completes, quantize and evaluate
    from cache. Run alone, after the burst: on the test's SQLite Prefect server the detection's
    writes met "database is locked" under six concurrent runs."""
    import onnx
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from quantmill.tracking.webhooks import ensure_registry_webhook
    from tests.stack import BIN

    stack = live
    ensure_registry_webhook(stack.webhook_url, SECRET, ("model_version.created", "model_version_tag.set"))
    # Crash detection as the deployed stack sets it up, from here on only: its automation's
    # writes for every running flow run's heartbeats made the test's SQLite server answer
    # 503 ("database is locked") to the burst above, failing a run there (2026-11-29).
    stack.run(str(BIN / "quantmill"), "crash-detection")
    # Weights of its own (the same graph, another doc string), so no step is cached before the kill.
    graph = onnx.load(digits.model)
    graph.doc_string = "digits-lost: the digits CNN under another fingerprint"
    model = tmp_path / "digits-lost.onnx"
    onnx.save(graph, model)
    with get_client(sync_client=True) as prefect:
        before = {r.id for r in _deployment_runs(prefect)}
        _register(digits, "digits-lost", stack, model)
        (lost,) = _wait_for(lambda: [r for r in _deployment_runs(prefect) if r.id not in before], 180, "the digits-lost run", stack)
        _wait_for(lambda: {"quantize", "evaluate"} <= {k.split("#")[0] for k, v in _task_states(prefect, lost.id).items()
                                                       if v == "Completed"}, 600, "quantize and evaluate done", stack)
        assert not prefect.read_flow_run(lost.id).state.is_final(), "the run ended before the kill"
        stack.kill("worker-cpu")
        _kill_flow_run_processes(str(lost.id))
        crashed = _wait_for(lambda: _finished(prefect, lost.id), 300, "the lost run marked crashed", stack)
        assert crashed.state.is_crashed(), crashed.state
        stack.start_worker("cpu")
        again = run_deployment("quantize-model/quantize-model", parameters=lost.parameters, timeout=900)
        assert again.state.is_completed(), again.state.message
        states = _task_states(prefect, again.id)
        assert {v for k, v in states.items() if k.startswith("evaluate#")} == {"Cached"}, states
        assert "Cached" in {v for k, v in states.items() if k.startswith("quantize#")}, states


def test_a_language_model_through_its_trigger_the_cpu_pool_and_the_sweep(live, tiny_llama, tmp_path):
    import shutil
    import sys

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from quantmill.models import register_source_model
    from quantmill.tracking.client import client as mlflow_client
    from quantmill.tracking.registry import tag_model_version
    from quantmill.tracking.webhooks import ensure_registry_webhook

    stack = live
    ensure_registry_webhook(stack.webhook_url, SECRET, ("model_version.created", "model_version_tag.set"))
    registry = mlflow_client()
    with get_client(sync_client=True) as prefect:
        version = register_source_model(tiny_llama.model_dir, "tiny-llama")
        for key, value in {"quantmill.task": "language-modeling", "quantmill.calibration_data": str(tiny_llama.train_text),
                           "quantmill.eval_data": str(tiny_llama.heldout_text), "quantmill.max_ppl_increase": "5"}.items():
            tag_model_version("tiny-llama", version, key, value)
        runs = _wait_for(lambda: _deployment_runs(prefect, "quantize-language-model"), 120, "a language-model run", stack)
        done = _wait_for(lambda: _finished(prefect, runs[0].id), 900, "the language-model run finishing", stack)
        assert done.state.is_completed(), done.state.message
        report = done.state.result()
        assert report["task"] == "language-modeling" and report["model"]["source_format"] == "hf-causal-lm"
        assert report["budget"] == {"value": 5.0, "unit": "% perplexity increase", "parameter": "max_ppl_increase",
                                    "max_kld": None}
        assert [t["target"] for t in report["targets"]] == ["cpu"] and report["targets"][0]["status"] == "measured"
        assert "llama.cpp" in report["targets"][0]["hardware"]
        run_id = report["mlflow"]["run_id"]
        assert [a.path for a in registry.list_artifacts(run_id, "calibration")] == ["calibration/calibration_sample.npz"]
        assert registry.get_run(run_id).data.params["budget_unit"] == "% perplexity increase"
        quantized = _shipped_version("tiny-llama-quantized", report)

        # The sweep: the model's fresh text is English legal prose, not Python.
        prose = tmp_path / "recent.txt"
        shutil.copy(Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "LICENSE.txt", prose)
        registry.set_registered_model_alias("tiny-llama-quantized", "production-lm", quantized)
        tag_model_version("tiny-llama-quantized", quantized, "quantmill.recent_data", str(prose))
        sweep = run_deployment("recalibration-sweep/recalibration-sweep",
                               parameters={"alias": "production-lm", "benchmark_on": None}, timeout=900)
        assert sweep.state.is_completed(), sweep.state.message
        (found,) = sweep.state.result()["versions"]
        assert found["source_model"] == f"models:/tiny-llama/{version}"
        assert found["drift"]["drifted"] and found["drift"]["worst_feature"] == "window_log_perplexity"
        assert found["requantized"] and found["gate_status"] in ("passed", "manual_review", "failed")


def _kill_flow_run_processes(flow_run_id: str) -> None:
    """SIGKILL every process running flow run flow_run_id (the flow and its benchmark
    workers, found by the run id in their environment; the process worker starts each flow
    run in a session of its own), as a lost machine would end them."""
    import os
    import signal

    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def _shipped_version(quantized: str, report: dict) -> str:
    """The version of quantized that a run's result is in production as: the one the run
    registered when its gate passed, or, for manual_review (speed within noise on a loaded
    2-core machine is an honest outcome), the one a reviewer registers from the run's chosen
    artifact, as from MLflow's UI."""
    from quantmill.tracking.client import client as mlflow_client
    from quantmill.tracking.registry import register_folder

    if report["gate"]["status"] == "passed":
        return str(report["mlflow"]["version"])
    assert report["gate"]["status"] == "manual_review", report["gate"]
    run_id = report["mlflow"]["run_id"]
    return register_folder(quantized, f"{mlflow_client().get_run(run_id).info.artifact_uri}/chosen_artifact", run_id)


def _emit_again(event_id: str, parameters: dict, version: str) -> None:
    import asyncio
    import uuid

    from prefect.events import Event
    from prefect.events.clients import get_events_client

    from quantmill.registry_events import EVENT

    async def emit() -> None:
        async with get_events_client() as events:
            await events.emit(Event(
                id=uuid.UUID(event_id), event=EVENT, payload=parameters,
                resource={"prefect.resource.id": f"mlflow.model-version.digits-a.{version}"},
            ))

    asyncio.run(emit())


def _deliver_again(stack: Stack, name: str, version: str) -> int:
    """POST a correctly signed model_version.created delivery, as MLflow would send it."""
    body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "now",
                       "data": {"name": name, "version": version, "tags": {}}}).encode()
    delivery, stamp = "replayed-delivery", str(int(time.time()))
    signature = base64.b64encode(hmac.new(SECRET.encode(), f"{delivery}.{stamp}.".encode() + body, hashlib.sha256).digest())
    request = urllib.request.Request(stack.webhook_url, data=body, method="POST", headers={
        "Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": "v1," + signature.decode(),
    })
    with urllib.request.urlopen(request, timeout=30) as response:
        assert "duplicate" in json.loads(response.read())["message"]
        return response.status
