"""The registry webhook receiver: MLflow posts model-version events here; a version whose
tags ask for quantization becomes one Prefect event, on which the quantize-model
deployment's trigger (quantize-language-model's, for language models) starts a run
(deployments/prefect.yaml).

A duplicate starts nothing new, three times over: the event id is derived from the version
and its configuration, and Prefect's trigger service ignores an event id it has seen; the
receiver claims each id once in its own store (registry_events.EmittedEvents, atomic, so
concurrent copies of one delivery emit once); and it marks the version (tag
quantmill.requested = event id) once emitted, and emits nothing for a version so marked.

Hostile clients: each connection has READ_DEADLINE_S in all to send its headers and body, or
it is closed; at most MAX_READERS connections are read at once (more are answered 503 at
once), and at most MAX_CONNECTIONS deliveries are handled at once. A client sees a status
and a sentence, never an exception's text. It will not start without a reachable Prefect API
(it would emit into a throwaway server).

Run with `quantmill webhook serve`; point MLflow at it with `quantmill webhook register`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prefect.events import Event
from prefect.events.clients import get_events_client

from quantmill.registry_events import (
    EVENT,
    REQUESTED,
    WEBHOOK_EVENTS,
    EmittedEvents,
    QuantizeRequest,
    WebhookRejected,
    redact,
    request_from_tags,
    verify_delivery,
)
from quantmill.state import quantmill_home
from quantmill.tracking.registry import model_version_tags, tag_model_version

SECRET_ENV = "QUANTMILL_WEBHOOK_SECRET"
_MAX_BODY = 1 << 20
# Per read, and for headers and body in all: MLflow sends a small JSON body at once.
SOCKET_TIMEOUT_S = 5
READ_DEADLINE_S = 5
MAX_READERS = 128
MAX_CONNECTIONS = 16
logger = logging.getLogger("quantmill.webhook")


def handle_delivery(secret: str, headers: dict[str, str], body: bytes, emitted: EmittedEvents) -> tuple[int, str]:
    """Return the HTTP status and message for one webhook delivery: 401 for a delivery that
    fails verification, 202 for one that asks for nothing (or asks with tags that are
    refused), 200 once the version's event was emitted (or already had been, by this call's
    claim in emitted or the version's tag). Errors reaching MLflow or Prefect propagate, so
    MLflow retries the delivery; a claim whose event was not emitted is released."""
    try:
        payload = verify_delivery(secret, headers, body)
    except WebhookRejected as err:
        return 401, str(err)
    data = payload["data"]
    name, version = data["name"], str(data.get("version", ""))
    if f"{payload['entity']}.{payload['action']}" not in WEBHOOK_EVENTS or not version:
        return 202, f"ignored {payload['entity']}.{payload['action']}"
    tags = model_version_tags(name, version)
    try:
        request = request_from_tags(name, version, tags)
    except WebhookRejected as err:
        return 202, f"ignored: {err}"
    if request is None:
        return 202, f"models:/{name}/{version} does not ask for quantization"
    event_id = str(request.event_id())
    if tags.get(REQUESTED) == event_id or not emitted.claim(event_id):
        return 200, f"duplicate: {request.model_uri} already requested as event {event_id}"
    try:
        asyncio.run(_emit(request))
    except BaseException:
        emitted.release(event_id)
        raise
    try:
        tag_model_version(name, version, REQUESTED, event_id)
    except Exception as err:  # noqa: BLE001 - the event is out and claimed: a retry would add nothing
        logger.warning("emitted %s but could not tag %s: %s", event_id, request.model_uri, type(err).__name__)
    logger.info("emitted %s for %s (event %s)", EVENT, request.model_uri, event_id)
    return 200, f"emitted {EVENT} for {request.model_uri} as event {event_id}"


async def _emit(request: QuantizeRequest) -> None:
    event = Event(
        id=request.event_id(), event=EVENT,
        resource={
            "prefect.resource.id": f"mlflow.model-version.{request.name}.{request.version}",
            "prefect.resource.name": f"{request.name} v{request.version}",
            "mlflow.model.name": request.name, "mlflow.model.version": request.version,
            # Deployment triggers match on it: language models go to quantize-language-model.
            "quantmill.task": request.task,
        },
        payload=request.flow_parameters(),
    )
    async with get_events_client() as events:
        await events.emit(event)


class _BoundedServer(ThreadingHTTPServer):
    # A thread per connection while it is read, up to MAX_READERS (a connection beyond them
    # is answered 503 and closed at once, so slow clients cannot queue the rest behind
    # them); at most MAX_CONNECTIONS of those handle a delivery at once.
    daemon_threads = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.readers = threading.BoundedSemaphore(MAX_READERS)
        self.handlers = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address) -> None:
        if not self.readers.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.readers.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.readers.release()


def _refuse_busy(request: socket.socket) -> None:
    data = json.dumps({"message": "busy: too many connections; retry"}).encode()
    try:
        request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Connection: close\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    except OSError:
        pass


def serve(host: str, port: int, secret: str, emitted: EmittedEvents | None = None) -> ThreadingHTTPServer:
    """Return a started-on-demand HTTP server (call serve_forever) that handles MLflow's
    webhook POSTs on any path: 411 without a usable Content-Length and 413 above 1 MiB,
    both before reading the body; READ_DEADLINE_S for headers and body in all; at most
    MAX_READERS connections read and MAX_CONNECTIONS deliveries handled at once. emitted
    (by default in quantmill's home) holds the event ids claimed."""
    emitted = emitted or EmittedEvents(quantmill_home() / "webhook" / "emitted.db")

    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_S

        def handle(self) -> None:
            self.read_all = threading.Event()
            deadline = threading.Timer(READ_DEADLINE_S, self._expire)
            deadline.start()
            try:
                super().handle()
            finally:
                deadline.cancel()

        def _expire(self) -> None:
            # A slow client's pending read returns at once, and the handler ends.
            if not self.read_all.is_set():
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def do_POST(self) -> None:
            declared = self.headers.get("Content-Length", "")
            if not (declared.isascii() and declared.isdigit()):
                return self._reply(411, "a Content-Length of 0 or more bytes is required")
            if int(declared) > _MAX_BODY:
                return self._reply(413, f"body over {_MAX_BODY} bytes")
            body = self.rfile.read(int(declared))
            if len(body) < int(declared):
                return self._reply(400, "body shorter than its Content-Length (or sent too slowly)")
            self.read_all.set()
            with self.server.handlers:
                try:
                    status, message = handle_delivery(secret, dict(self.headers.items()), body, emitted)
                except Exception as err:  # noqa: BLE001 - any failure downstream: 503 so MLflow retries
                    logger.error("webhook delivery failed: %s: %s", type(err).__name__, redact(str(err)))
                    status, message = 503, "the delivery could not be handled now; retry"
            self._reply(status, message)

        def do_GET(self) -> None:
            self.read_all.set()
            self._reply(200, "quantmill webhook receiver")

        def _reply(self, status: int, message: str) -> None:
            data = json.dumps({"message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            # The body of a refused request is never read, so the connection is not reused.
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def log_message(self, format: str, *args) -> None:
            logger.info("%s " + format, self.address_string(), *args)

    return _BoundedServer((host, port), Handler)


def check_prefect_api(timeout_s: float = 10.0) -> str:
    """Return the Prefect API URL this process emits to, once its /health answers. Raises
    SystemExit with the reason when none is configured (Prefect would emit into a temporary
    server of its own, and no deployment would ever see the events) or it does not answer."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise SystemExit("quantmill: error: PREFECT_API_URL is not set: the receiver would emit into a throwaway "
                         "temporary Prefect server; point it at the server the deployments live on")
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout_s) as reply:
            if reply.status != 200:
                raise OSError(f"HTTP {reply.status}")
    except OSError as err:
        raise SystemExit(f"quantmill: error: the Prefect API at {redact(url)} does not answer "
                         f"({type(err).__name__}); the receiver will not start without it") from None
    return url


def secret_from_env() -> str:
    """Return the shared webhook secret from $QUANTMILL_WEBHOOK_SECRET. Raises SystemExit if unset."""
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise SystemExit(f"quantmill: error: set {SECRET_ENV} to the secret shared with MLflow's webhook")
    return secret
