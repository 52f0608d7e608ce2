"""Which failures a task retries: what a retry can cure, never what it cannot."""

import errno

import pytest
from prefect.states import Failed

from quantmill.errors import InputError
from tasks.policy import transient


def _mlflow_error(status: int):
    from mlflow.exceptions import MlflowException

    err = MlflowException("server said so")
    err.get_http_status_code = lambda: status
    return err


@pytest.mark.parametrize(("error", "retried"), [
    (ConnectionRefusedError("refused"), True),
    (TimeoutError("timed out"), True),
    (OSError(errno.ECONNRESET, "reset"), True),
    (OSError(errno.ENOSPC, "No space left on device"), False),
    (OSError(errno.EROFS, "Read-only file system"), False),
    (FileNotFoundError("gone"), False),
    (InputError("model.onnx", "not an ONNX model"), False),
    (ValueError("a bug"), False),
], ids=["refused", "timeout", "reset", "disk-full", "read-only", "missing", "bad-input", "bug"])
def test_only_what_a_retry_can_cure_is_retried(error, retried):
    assert transient(None, None, Failed(data=error)) is retried


def test_a_registry_answering_5xx_is_retried_and_a_4xx_is_not():
    assert transient(None, None, Failed(data=_mlflow_error(503)))
    assert not transient(None, None, Failed(data=_mlflow_error(404)))


def test_a_registry_that_is_down_is_not_bad_input(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    from quantmill.tracking.registry import download_registered_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(MlflowException) as raised:
        download_registered_model("models:/digits/1", tmp_path)
    assert not isinstance(raised.value, InputError) and transient(None, None, Failed(data=raised.value))
