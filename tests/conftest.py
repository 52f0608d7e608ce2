"""Shared fixtures: real models built here once per session, an isolated quantmill home
(MLflow SQLite store in a temp dir) per test, and Prefect's ephemeral test API."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantmill.storage import S3Location, s3_client
from quantmill.zoo.digits import DigitsFiles, build_digits
from quantmill.zoo.minilm import write_text_sets
from tests.stack import free_port

REPO = Path(__file__).resolve().parent.parent
# Built models survive between runs here (git-ignored), so a second `make test` skips training.
MODEL_CACHE = REPO / ".quantmill" / "models"


@pytest.fixture(scope="session")
def digits() -> DigitsFiles:
    return build_digits(MODEL_CACHE / "digits")


@pytest.fixture(scope="session")
def text_sets() -> tuple[Path, Path]:
    return write_text_sets(MODEL_CACHE / "text", calibration_size=96, evaluation_size=160)


@pytest.fixture(autouse=True)
def quantmill_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("QUANTMILL_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture(scope="session")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_llama():
    from quantmill.zoo.tiny_llama import build_tiny_llama

    return build_tiny_llama(MODEL_CACHE)


@pytest.fixture
def s3_server(monkeypatch):
    """An S3 API server (moto's server mode) on a free loopback port, with a bucket."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    location = S3Location("artifacts", "quantmill", f"http://127.0.0.1:{port}")
    s3_client(location).create_bucket(Bucket=location.bucket)
    yield server, location
    server.stop()
