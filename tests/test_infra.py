"""infra/compose.yaml starts nothing with a known secret, and asks for credentials at both servers."""

import re
from pathlib import Path

COMPOSE = (Path(__file__).resolve().parents[1] / "infra" / "compose.yaml").read_text()


def test_no_secret_has_a_default():
    defaults = re.findall(r"\$\{(\w*(?:PASSWORD|SECRET|AUTH)\w*):-", COMPOSE)
    assert defaults == []
    for name in ("QUANTMILL_WEBHOOK_SECRET", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "PREFECT_AUTH_STRING",
                 "MLFLOW_ADMIN_PASSWORD", "MLFLOW_WEBHOOK_KEY"):
        assert f"${{{name}:?" in COMPOSE, name


def test_both_servers_ask_for_credentials():
    assert "PREFECT_SERVER_API_AUTH_STRING" in COMPOSE and "PREFECT_API_AUTH_STRING" in COMPOSE
    assert "--app-name basic-auth" in COMPOSE and "MLFLOW_TRACKING_PASSWORD" in COMPOSE


# What ships is locked: rendered from the files as compose and Prefect's worker read them.
INFRA = Path(__file__).resolve().parents[1] / "infra"


def _services() -> dict:
    import yaml

    return yaml.safe_load(COMPOSE)["services"]


def test_published_ports_bind_to_loopback_unless_overridden():
    published = [port for service in _services().values() for port in service.get("ports", [])]
    assert published and all(port.startswith("${QUANTMILL_BIND_ADDRESS:-127.0.0.1}:") for port in published), published


def test_no_secret_is_on_a_command_line():
    for name, service in _services().items():
        for key in ("command", "entrypoint"):
            line = " ".join(service[key]) if isinstance(service.get(key), list) else service.get(key) or ""
            assert not re.search(r"\$\{?\w*(PASSWORD|SECRET|AUTH|KEY)", line), (name, key, line)


def test_each_service_holds_only_its_own_s3_keys():
    services = _services()
    keys = {name: (s.get("environment") or {}).get("AWS_SECRET_ACCESS_KEY") for name, s in services.items()
            if name not in ("minio", "buckets")}
    assert not any("MINIO_ROOT_PASSWORD" in (key or "") for key in keys.values()), keys
    assert "MLFLOW_S3_SECRET" in keys["mlflow"] and "QUANTMILL_S3_SECRET" in keys["worker-cpu"]
    assert keys["quantmill-webhook"] == "" and services["quantmill-webhook"]["environment"]["AWS_ACCESS_KEY_ID"] == ""
    script = (INFRA / "minio-users.sh").read_text()
    assert '"arn:aws:s3:::$bucket/*"' in script and "mc admin policy attach" in script


def test_quantmills_images_run_as_a_non_root_user():
    for image in ("cpu", "gpu"):
        lines = (INFRA.parent / "docker" / f"{image}.Dockerfile").read_text().splitlines()
        users = [line.split()[1] for line in lines if line.startswith("USER ")]
        assert users and users[-1] == "10001", image


def test_kubernetes_jobs_are_locked_down():
    import json

    from prefect.utilities.templating import apply_values

    for pool in ("cpu", "gpu"):
        template = json.loads((INFRA / "k8s" / f"base-job-template-{pool}.json").read_text())
        defaults = {k: v["default"] for k, v in template["variables"]["properties"].items()}
        job = apply_values(template["job_configuration"], {**defaults, "name": "run", "command": "python -m x"})
        pod = job["job_manifest"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), pool
        image = container["image"]
        assert ":" in image and not image.endswith(":latest"), image
        # The read-only root leaves /tmp (an emptyDir) and /data as the places to write.
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/data", "/tmp"}
        assert job["env"]["HOME"].startswith("/tmp") and job["env"]["PREFECT_HOME"].startswith("/tmp")
        values = (INFRA / "k8s" / f"values-{pool}.yaml").read_text()
        import yaml

        worker = yaml.safe_load(values)["worker"]
        assert worker["image"]["prefectTag"] != "latest" and {"cpu", "memory"} <= set(worker["resources"]["limits"])
        assert worker["containerSecurityContext"]["readOnlyRootFilesystem"] is True
