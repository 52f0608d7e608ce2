"""MLflow's webhook deliveries, as MLflow's own signer makes them, are accepted; altered,
replayed or unsigned ones are not; one version and configuration is one event id."""

import json
import time

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from quantmill.registry_events import WebhookRejected, request_from_tags, verify_delivery

SECRET = "s3cret"
TAGS = {"quantmill.task": "classification", "quantmill.calibration_data": "/d/cal.npz", "quantmill.eval_data": "/d/eval.npz"}


def _delivery(body: str, stamp: int, secret: str = SECRET) -> dict[str, str]:
    return {"X-MLflow-Delivery-Id": "d-1", "X-MLflow-Timestamp": str(stamp),
            "X-MLflow-Signature": _generate_hmac_signature(secret, "d-1", str(stamp), body)}


def test_deliveries_signed_by_mlflow_are_accepted_and_others_rejected():
    body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "t", "data": {"name": "m", "version": "3"}})
    now = int(time.time())
    assert verify_delivery(SECRET, _delivery(body, now), body.encode())["data"]["version"] == "3"
    for headers, sent, why in [
        (_delivery(body, now, "other"), body, "signature"),
        (_delivery(body, now), body.replace('"3"', '"4"'), "signature"),
        (_delivery(body, now - 3600), body, "replay"),
        ({}, body, "headers"),
    ]:
        with pytest.raises(WebhookRejected, match=why):
            verify_delivery(SECRET, headers, sent.encode())


def test_one_version_and_configuration_is_one_event():
    assert request_from_tags("m", "1", {k: v for k, v in TAGS.items() if k != "quantmill.eval_data"}) is None
    first = request_from_tags("m", "1", TAGS)
    assert first.event_id() == request_from_tags("m", "1", dict(reversed(TAGS.items()))).event_id()
    assert first.event_id() != request_from_tags("m", "2", TAGS).event_id()
    assert first.event_id() != request_from_tags("m", "1", {**TAGS, "quantmill.max_accuracy_drop": "0.5"}).event_id()
    assert first.flow_parameters()["model"] == "models:/m/1"
    lm = request_from_tags("lm", "1", {**TAGS, "quantmill.task": "language-modeling", "quantmill.max_ppl_increase": "2"})
    assert lm.flow_parameters()["max_ppl_increase"] == 2.0 and lm.flow_parameters()["task"] == "language-modeling"
    assert "max_accuracy_drop" not in lm.flow_parameters()
    with pytest.raises(WebhookRejected, match="max_accuracy_drop"):
        request_from_tags("m", "1", {**TAGS, "quantmill.max_accuracy_drop": "half"})
