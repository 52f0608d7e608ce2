"""MLflow registry webhooks: verifying a delivery, and reading from a model version's tags
whether and how quantmill should quantize it.

A version asks to be quantized by carrying the tags quantmill.task,
quantmill.calibration_data and quantmill.eval_data (optionally quantmill.target and the
budget: quantmill.max_accuracy_drop, or quantmill.max_ppl_increase for language models).
The same version with the same tags is one request, named by one event id, however often
MLflow reports it; EmittedEvents claims each id once, atomically, so concurrent copies of one
delivery emit one event.

Whoever can tag a model version chooses the data a worker reads, and calibration samples are
logged to MLflow: a local data path from a tag must lie inside a folder named in
$QUANTMILL_DATA_ROOTS (os.pathsep-separated); registry and object-store URIs pass."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

from quantmill.errors import QuantmillError
from quantmill.metrics import budget_for, get_metric

EVENT = "quantmill.model-version.registered"
TASK, CALIBRATION, EVALUATION = "quantmill.task", "quantmill.calibration_data", "quantmill.eval_data"
TARGET = "quantmill.target"
# Set by the receiver once it has emitted a version's event: the event id it emitted.
REQUESTED = "quantmill.requested"
# The registry events that may complete a request: a version created with its tags, or a
# tag set on it afterwards.
WEBHOOK_EVENTS = ("model_version.created", "model_version_tag.set")
_NAMESPACE = uuid.UUID("6f1d9e0a-7c43-4b8e-9a55-3f2d8c1b0e47")
_MAX_CLOCK_SKEW_S = 300
# Unix seconds have 10 digits until the year 2286.
_MAX_STAMP_DIGITS = 12
DATA_ROOTS_ENV = "QUANTMILL_DATA_ROOTS"
# Data a tag may name without a root: the registry's, a run's, and object stores.
_URI_SCHEMES = ("s3://", "models:/", "runs:/", "mlflow-artifacts:/")
_CREDENTIALS = re.compile(r"(\w[\w+.-]*://)[^/@\s]+@")


class WebhookRejected(QuantmillError):
    """A delivery that is not MLflow's: bad or missing signature, stale timestamp, or a body
    that is not a webhook payload."""


@dataclass(frozen=True)
class QuantizeRequest:
    """One registered model version and the configuration it is to be quantized with."""

    name: str
    version: str
    task: str
    calibration_data: str
    eval_data: str
    budget: float | None = None
    target: str | None = None

    @property
    def model_uri(self) -> str:
        """Return models:/NAME/VERSION."""
        return f"models:/{self.name}/{self.version}"

    def event_id(self) -> uuid.UUID:
        """Return the id of this request's event: the same for the same version and configuration."""
        return uuid.uuid5(_NAMESPACE, json.dumps(asdict(self), sort_keys=True))

    def flow_parameters(self) -> dict:
        """Return the parameters of the quantize-model flow for this request: the budget
        under the parameter its task's metric reads, always (the metric's default where the
        tags give none, so that a deployment's template never has to tell 0 from unset)."""
        budget = budget_for(self.task, **{_budget_key(self.task): self.budget}).value
        return {
            "model": self.model_uri, "out_dir": f"out/{self.name}-v{self.version}", "task": self.task,
            "calibration_data": self.calibration_data, "eval_data": self.eval_data, _budget_key(self.task): budget,
            **({"target": self.target} if self.target is not None else {}),
        }


def _budget_key(task: str) -> str:
    try:
        return get_metric(task).budget_parameter
    except QuantmillError as err:
        raise WebhookRejected(str(err)) from None


def request_from_tags(name: str, version: str, tags: dict[str, str]) -> QuantizeRequest | None:
    """Return the QuantizeRequest that a version's tags make, or None when they do not ask
    for quantization (any of the three required tags missing).

    Raises WebhookRejected naming the version when the budget tag is not a finite number of
    0 or more (0 is a budget of 0), or a data tag names a local path outside the data roots.
    """
    if not all(tags.get(key) for key in (TASK, CALIBRATION, EVALUATION)):
        return None
    tag = f"quantmill.{_budget_key(tags[TASK])}"
    try:
        budget = float(tags[tag]) if tags.get(tag) else None
        budget_for(tags[TASK], **{_budget_key(tags[TASK]): budget})
    except ValueError:
        raise WebhookRejected(f"models:/{name}/{version}: tag {tag}={tags[tag]!r} is not a number") from None
    except QuantmillError as err:
        raise WebhookRejected(f"models:/{name}/{version}: tag {tag}: {err}") from None
    for key in (CALIBRATION, EVALUATION):
        check_data_location(f"models:/{name}/{version}: tag {key}", tags[key])
    return QuantizeRequest(name, str(version), tags[TASK], tags[CALIBRATION], tags[EVALUATION], budget, tags.get(TARGET))


def data_roots() -> tuple[Path, ...]:
    """Return the folders local data paths from tags must lie in ($QUANTMILL_DATA_ROOTS)."""
    return tuple(Path(p).resolve() for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p)


def check_data_location(what: str, value: str) -> None:
    """Return when value, a data location from a tag, is a registry or object-store URI, or
    a local path that resolves (links followed) inside one of data_roots(). Raises
    WebhookRejected naming what otherwise."""
    if value.startswith(_URI_SCHEMES):
        return
    if "://" in value or value.startswith(("file:", "/dev/", "/proc/")):
        raise WebhookRejected(f"{what}: {value!r} is neither a local path nor a registry or S3 URI")
    resolved = Path(value).resolve()
    roots = data_roots()
    if not any(resolved.is_relative_to(root) for root in roots):
        where = ", ".join(map(str, roots)) or f"none: set {DATA_ROOTS_ENV}"
        raise WebhookRejected(f"{what}: {value!r} is outside the data roots ({where})")


def redact(text: str) -> str:
    """Return text with the user and password of any URL in it replaced by ***."""
    return _CREDENTIALS.sub(r"\1***@", text)


class EmittedEvents:
    """The event ids a receiver has emitted, in an SQLite file whose primary key makes each
    claim atomic across threads and processes: check-then-act on a tag is not."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        with closing(self._connect()) as db:
            db.execute("CREATE TABLE IF NOT EXISTS emitted (event_id TEXT PRIMARY KEY, at REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def claim(self, event_id: str) -> bool:
        """Return True when this call is the first to claim event_id (the caller emits it),
        False when it was claimed before."""
        with self._lock, closing(self._connect()) as db:
            return db.execute("INSERT OR IGNORE INTO emitted VALUES (?, ?)", (event_id, time.time())).rowcount == 1

    def release(self, event_id: str) -> None:
        """Forget a claim whose event could not be emitted, so that MLflow's retry emits it."""
        with self._lock, closing(self._connect()) as db:
            db.execute("DELETE FROM emitted WHERE event_id = ?", (event_id,))


def verify_delivery(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> dict:
    """Return the parsed webhook payload ({"entity", "action", "timestamp", "data"}) after
    checking MLflow's HMAC-SHA256 signature over "delivery_id.timestamp.body" and that the
    timestamp is within five minutes.

    Hand-written because MLflow ships the signing side only. Raises WebhookRejected.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    delivery, stamp, signature = (lowered.get(h) for h in ("x-mlflow-delivery-id", "x-mlflow-timestamp", "x-mlflow-signature"))
    if not (delivery and stamp and signature):
        raise WebhookRejected("webhook delivery without MLflow's delivery id, timestamp and signature headers")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= _MAX_STAMP_DIGITS):
        raise WebhookRejected(f"webhook timestamp {stamp[:32]!r} is not a Unix time")
    skew = abs((time.time() if now is None else now) - int(stamp))
    if skew > _MAX_CLOCK_SKEW_S:
        raise WebhookRejected(f"webhook timestamp {stamp} is {skew:.0f} s away from now (replay?)")
    if not (signature.isascii() and delivery.isascii()):
        raise WebhookRejected("webhook signature or delivery id is not ASCII")
    digest = hmac.new(secret.encode(), f"{delivery}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    if not hmac.compare_digest(expected, signature):
        raise WebhookRejected("webhook signature does not match the shared secret")
    try:
        payload = json.loads(body)
        payload["entity"], payload["action"], payload["data"]["name"]
    except (ValueError, KeyError, TypeError):
        raise WebhookRejected("webhook body is not an MLflow registry payload") from None
    return payload
