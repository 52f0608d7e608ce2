"""MLflow registry webhooks: verifying a delivery, and reading from a model version's tags
whether and how quantmill should quantize it.

A version asks to be quantized by carrying the tags quantmill.task,
quantmill.calibration_data and quantmill.eval_data (optionally quantmill.target and the
budget: quantmill.max_accuracy_drop, or quantmill.max_ppl_increase for language models).
The same version with the same tags is one request, named by one event id, however often
MLflow reports it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import asdict, dataclass

from quantmill.errors import QuantmillError
from quantmill.metrics import get_metric

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
        """Return the parameters of the quantize-model flow for this request, the budget
        under the parameter its task's metric reads."""
        chosen = {_budget_key(self.task): self.budget, "target": self.target}
        return {
            "model": self.model_uri, "out_dir": f"out/{self.name}-v{self.version}", "task": self.task,
            "calibration_data": self.calibration_data, "eval_data": self.eval_data,
            **{k: v for k, v in chosen.items() if v is not None},
        }


def _budget_key(task: str) -> str:
    try:
        return get_metric(task).budget_parameter
    except QuantmillError as err:
        raise WebhookRejected(str(err)) from None


def request_from_tags(name: str, version: str, tags: dict[str, str]) -> QuantizeRequest | None:
    """Return the QuantizeRequest that a version's tags make, or None when they do not ask
    for quantization (any of the three required tags missing).

    Raises WebhookRejected naming the version when the budget tag is not a number.
    """
    if not all(tags.get(key) for key in (TASK, CALIBRATION, EVALUATION)):
        return None
    tag = f"quantmill.{_budget_key(tags[TASK])}"
    try:
        budget = float(tags[tag]) if tags.get(tag) else None
    except ValueError:
        raise WebhookRejected(f"models:/{name}/{version}: tag {tag}={tags[tag]!r} is not a number") from None
    return QuantizeRequest(name, str(version), tags[TASK], tags[CALIBRATION], tags[EVALUATION], budget, tags.get(TARGET))


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
