"""deployments/prefect.yaml and quantmill/targets.py name the same hardware targets and pools."""

from pathlib import Path

import yaml

from quantmill.targets import TARGETS

DEPLOYMENTS = yaml.safe_load((Path(__file__).resolve().parents[1] / "deployments" / "prefect.yaml").read_text())["deployments"]


def test_one_benchmark_deployment_per_target_on_its_pool():
    benchmark = {d["name"]: d for d in DEPLOYMENTS if d["entrypoint"].endswith(":benchmark_on_hardware")}
    assert set(benchmark) == set(TARGETS)
    for name, deployment in benchmark.items():
        assert deployment["work_pool"]["name"] == TARGETS[name].pool
        assert deployment["parameters"]["target"] == name


def test_every_target_named_in_a_deployment_is_known():
    for deployment in DEPLOYMENTS:
        parameters = deployment.get("parameters", {})
        assert set(parameters.get("benchmark_on") or []) <= set(TARGETS), deployment["name"]
        assert parameters.get("target", "cpu") in TARGETS


def test_every_kind_of_model_goes_through_the_one_flow():
    quantize = [d for d in DEPLOYMENTS if d["entrypoint"] == "flows/quantize_model.py:quantize_model"]
    tasks = {t for d in quantize for trigger in d["triggers"] for t in _as_list(trigger["match"]["quantmill.task"])}
    assert tasks == {"classification", "embedding", "language-modeling"}


def _as_list(value):
    return value if isinstance(value, list) else [value]
