"""MLflow's webhook deliveries, as MLflow's own signer makes them, are accepted; altered,
replayed or unsigned ones are not; one version and configuration is one event id."""

import json
import time

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from quantmill.registry_events import EmittedEvents, WebhookRejected, redact, request_from_tags, verify_delivery

SECRET = "s3cret"
TAGS = {"quantmill.task": "classification", "quantmill.calibration_data": "/d/cal.npz", "quantmill.eval_data": "/d/eval.npz"}


@pytest.fixture(autouse=True)
def data_roots(monkeypatch):
    monkeypatch.setenv("QUANTMILL_DATA_ROOTS", "/d")


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


# Class: non-finite and out-of-range numbers. Zero is a budget of zero, not the default.
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_a_budget_tag_that_is_not_a_finite_number_of_0_or_more_is_refused(value):
    with pytest.raises(WebhookRejected, match=r"models:/m/1: tag quantmill.max_accuracy_drop: max_accuracy_drop must be"):
        request_from_tags("m", "1", {**TAGS, "quantmill.max_accuracy_drop": value})


def test_a_zero_budget_is_zero_and_no_tag_is_the_default():
    assert request_from_tags("m", "1", {**TAGS, "quantmill.max_accuracy_drop": "0"}).flow_parameters()["max_accuracy_drop"] == 0.0
    assert request_from_tags("m", "1", TAGS).flow_parameters()["max_accuracy_drop"] == 1.0


# Class: paths a tag may not name. Whoever tags a version would otherwise choose which of a
# worker's files are read and logged to MLflow.
@pytest.mark.parametrize("value", ["/etc/passwd", "/d/../etc/passwd", "file:///d/cal.npz", "http://x/cal.npz", "/dev/zero"])
def test_a_data_tag_outside_the_data_roots_is_refused(value):
    with pytest.raises(WebhookRejected, match="quantmill.calibration_data"):
        request_from_tags("m", "1", {**TAGS, "quantmill.calibration_data": value})


def test_data_tags_inside_the_roots_or_as_registry_and_s3_uris_pass(monkeypatch):
    for value in ("/d/sub/cal.npz", "s3://bucket/cal.npz", "runs:/abc/cal.npz"):
        assert request_from_tags("m", "1", {**TAGS, "quantmill.calibration_data": value}).calibration_data == value
    monkeypatch.delenv("QUANTMILL_DATA_ROOTS")
    with pytest.raises(WebhookRejected, match="outside the data roots .none: set QUANTMILL_DATA_ROOTS"):
        request_from_tags("m", "1", TAGS)


def test_an_event_id_is_claimed_once_across_threads_and_released_when_not_emitted(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    store = EmittedEvents(tmp_path / "emitted.db")
    other = EmittedEvents(tmp_path / "emitted.db")  # another receiver on the same file
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda i: (store if i % 2 else other).claim("e-1"), range(8)))
    assert sorted(claims) == [False] * 7 + [True]
    store.release("e-1")
    assert other.claim("e-1")


def test_credentials_in_urls_are_redacted():
    assert redact("cannot reach http://admin:pw@mlflow:5000/api (https://u@h/)") == \
        "cannot reach http://***@mlflow:5000/api (https://***@h/)"
