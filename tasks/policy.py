"""Retry and caching policy shared by quantmill's tasks."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from quantmill.errors import QuantmillError

# Results hold numpy arrays and live only for one flow run; cross-run caching keyed on
# content hashes is tracked separately (issue 4).
EPHEMERAL = {"cache_policy": NO_CACHE, "persist_result": False}


def transient(task, task_run, state) -> bool:
    """Return whether a failed task run may be retried: connection, timeout and other I/O
    errors may pass; bad input and bugs fail the same way every time."""
    try:
        state.result()
    except QuantmillError:
        return False
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError):
        return False
    except (OSError, TimeoutError):
        return True
    except Exception as err:
        # MLflow wraps server-side 5xx and unreachable stores in MlflowException; botocore
        # raises its own connection errors and ClientError for S3's 5xx.
        name = type(err).__name__
        if name == "MlflowException":
            return getattr(err, "get_http_status_code", lambda: 500)() >= 500
        if name == "ClientError":
            return getattr(err, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
        return name in {"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError"}
    return False
