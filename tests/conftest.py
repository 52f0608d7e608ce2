"""Shared fixtures: real models built here once per session, an isolated quantmill home
(MLflow SQLite store in a temp dir) per test, and Prefect's ephemeral test API."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from quantmill.storage import S3Location, s3_client
from quantmill.zoo.digits import DigitsFiles, build_digits
from quantmill.zoo.minilm import write_text_sets
from tests.stack import free_port

REPO = Path(__file__).resolve().parent.parent


def _model_cache() -> Path:
    # Built models survive between runs, and between clones, outside the clone: training the
    # tiny Llama is the slowest part of a fresh clone's test run (about 210 s). The folder is
    # named by what the models are made from (the zoo's code, the pinned versions, this
    # Python, whose standard library is the Llama's corpus), so a change to any makes new ones.
    made_from = hashlib.sha256(sys.version.encode())
    for path in sorted((REPO / "quantmill" / "zoo").glob("*.py")) + [REPO / "constraints.txt"]:
        made_from.update(path.read_bytes())
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "quantmill"
    return root / f"test-models-{made_from.hexdigest()[:16]}"


MODEL_CACHE = _model_cache()


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
def efficientnet_lite0():
    from quantmill.zoo.efficientnet_lite0 import build_efficientnet_lite0

    return build_efficientnet_lite0(MODEL_CACHE / "efficientnet-lite0")


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
