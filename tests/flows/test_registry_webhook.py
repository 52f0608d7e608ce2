"""The webhook receiver's edges, over a real socket: a request it cannot trust is refused
with the right status before its body is read, and never answered with a stack trace."""

import json
import socket
import threading
import time

import pytest

from flows.registry_webhook import serve
from tests.stack import free_port

SECRET = "s3cret"


@pytest.fixture(scope="module")
def receiver():
    port = free_port()
    server = serve("127.0.0.1", port, SECRET)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
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
