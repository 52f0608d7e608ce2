"""The webhook receiver's edges, over a real socket: a request it cannot trust is refused
with the right status before its body is read, and never answered with a stack trace or an
exception's text; slow clients cannot hold it; concurrent copies of one delivery emit one
event; it will not start without a Prefect API to emit to."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

import flows.registry_webhook as webhook
from flows.registry_webhook import READ_DEADLINE_S, check_prefect_api, serve
from quantmill.registry_events import EmittedEvents
from tests.stack import free_port

SECRET = "s3cret"


def _start(emitted: EmittedEvents):
    port = free_port()
    server = serve("127.0.0.1", port, SECRET, emitted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    server, port = _start(EmittedEvents(tmp_path_factory.mktemp("webhook") / "emitted.db"))
    yield port
    server.shutdown()


def _post(port: int, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict]:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"POST / HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize(("length", "status"), [
    (None, 411), ("-1", 411), ("ten", 411), ("1e3", 411), (str(8 << 20), 413),
])
def test_a_body_length_it_cannot_trust_is_refused_before_reading(receiver, length, status):
    headers = {} if length is None else {"Content-Length": length}
    started = time.monotonic()
    # No body is sent: the answer must not wait for one.
    assert _post(receiver, headers)[0] == status
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("stamp", "signature"), [
    (str(int(time.time())), "v1,sïgnature"),
    ("9" * 400, "v1,abc"),
    ("1e9", "v1,abc"),
], ids=["non-ascii-signature", "huge-timestamp", "float-timestamp"])
def test_a_malformed_signature_is_401_not_a_stack_trace(receiver, stamp, signature):
    body = b'{"entity": "model_version", "action": "created", "data": {"name": "m", "version": "1"}}'
    status, reply = _post(receiver, {
        "Content-Length": str(len(body)), "X-MLflow-Delivery-Id": "d", "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": signature,
    }, body)
    assert status == 401 and "Traceback" not in reply["message"], reply


def _signed(name: str, version: str) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "t",
                       "data": {"name": name, "version": version}})
    stamp = str(int(time.time()))
    return {"Content-Length": str(len(body)), "X-MLflow-Delivery-Id": "d-1", "X-MLflow-Timestamp": stamp,
            "X-MLflow-Signature": _generate_hmac_signature(SECRET, "d-1", stamp, body)}, body.encode()


def test_slow_clients_cannot_hold_the_receiver(receiver):
    # 20 slowloris connections: a request line and one header, then nothing.
    slow = [socket.create_connection(("127.0.0.1", receiver), timeout=30) for _ in range(20)]
    for conn in slow:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
    try:
        started = time.monotonic()
        status, reply = _post(receiver, {"Content-Length": "2", "X-MLflow-Delivery-Id": "d"}, b"{}")
        assert status == 401 and time.monotonic() - started < 5, reply
        # Each slow connection is closed once its deadline for headers and body has passed.
        for conn in slow:
            assert conn.recv(1024) == b""
        assert time.monotonic() - started < READ_DEADLINE_S + 5
    finally:
        for conn in slow:
            conn.close()


def test_concurrent_copies_of_one_delivery_emit_one_event(digits, tmp_path, monkeypatch):
    from quantmill.models import register_source_model
    from quantmill.tracking.registry import model_version_tags, tag_model_version

    monkeypatch.setenv("QUANTMILL_DATA_ROOTS", str(digits.calibration.parent))
    version = register_source_model(digits.model, "copies")
    for key, value in {"quantmill.task": "classification", "quantmill.calibration_data": str(digits.calibration),
                       "quantmill.eval_data": str(digits.evaluation)}.items():
        tag_model_version("copies", version, key, value)
    emitted = []

    async def emit(request):  # Prefect's side: counted here, as its events client would send it
        time.sleep(0.2)
        emitted.append(request.event_id())

    monkeypatch.setattr(webhook, "_emit", emit)
    server, port = _start(EmittedEvents(tmp_path / "emitted.db"))
    try:
        headers, body = _signed("copies", version)
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: _post(port, headers, body), range(8)))
    finally:
        server.shutdown()
    assert [status for status, _ in replies] == [200] * 8
    assert len(emitted) == 1 and sum("duplicate" in r["message"] for _, r in replies) == 7
    assert model_version_tags("copies", version)["quantmill.requested"] == str(emitted[0])


def test_a_failure_downstream_is_503_without_its_text_and_logged_without_credentials(receiver, monkeypatch, caplog):
    def unreachable(name, version):
        raise ConnectionError("cannot reach http://admin:hunter2@mlflow:5000/api/2.0/mlflow")

    monkeypatch.setattr(webhook, "model_version_tags", unreachable)
    headers, body = _signed("m", "1")
    with caplog.at_level("ERROR", logger="quantmill.webhook"):
        status, reply = _post(receiver, headers, body)
    assert status == 503 and reply == {"message": "the delivery could not be handled now; retry"}
    assert "ConnectionError" in caplog.text and "http://***@mlflow" in caplog.text and "hunter2" not in caplog.text


def test_it_will_not_start_without_a_prefect_api_to_emit_to():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(SystemExit, match="PREFECT_API_URL is not set"):
        check_prefect_api()
    closed = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings({PREFECT_API_URL: closed}), pytest.raises(SystemExit, match=f"Prefect API at {closed} does not"):
        check_prefect_api(timeout_s=2)
