"""Caching, retry and timeout policy shared by quantmill's tasks."""

from __future__ import annotations

import errno
from datetime import timedelta

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from quantmill.errors import QuantmillError
from quantmill.hashing import fingerprint
from quantmill.provenance import code_version

# Cheap steps, and steps whose results are measurements (benchmarks) or hold arrays, run
# every time: a benchmark figure is always measured in the run that reports it.
EPHEMERAL = {"cache_policy": NO_CACHE, "persist_result": False}

_LASTING_OS_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG}

# Results are stored as JSON, never pickled, so reading a cache record cannot run code.
_CACHE_DAYS = 30


def cached(*, by_name: tuple[str, ...] = ()) -> dict:
    """Return task options that cache the result under a key over the task, the code's
    version and every parameter by content (files by sha256, data sets by their samples,
    options by value); parameters in by_name (scratch folders, output paths) count by
    their path. Results persist in Prefect's result storage: local by default, S3 when
    PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK names an s3-bucket block."""

    def key(context, parameters: dict) -> str:
        named = {k: str(v) if k in by_name else v for k, v in parameters.items()}
        return f"{context.task.name}-{fingerprint((code_version(), named))}"

    return {
        "cache_key_fn": key, "persist_result": True, "result_serializer": "json",
        "cache_expiration": timedelta(days=_CACHE_DAYS),
    }


def retried(retries: int = 3) -> dict:
    """Return task options that retry transient failures with exponential backoff and jitter
    (2 s, 4 s, 8 s, ... each ±50 %), and nothing else."""
    return {
        "retries": retries, "retry_delay_seconds": exponential_backoff(backoff_factor=2),
        "retry_jitter_factor": 0.5, "retry_condition_fn": transient,
    }


def transient(task, task_run, state) -> bool:
    """Return whether a failed task run may be retried: connection, timeout and other I/O
    errors may pass; bad input and bugs fail the same way every time."""
    try:
        state.result()
    except QuantmillError:
        return False
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError):
        return False
    except OSError as err:
        # A full disk, a read-only or over-quota filesystem stays that way for the retry.
        return err.errno not in _LASTING_OS_ERRORS
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
