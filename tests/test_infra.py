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
