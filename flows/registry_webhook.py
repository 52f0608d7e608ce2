"""The registry webhook receiver: MLflow posts model-version events here; a version whose
tags ask for quantization becomes one Prefect event, on which the quantize-model
deployment's trigger (quantize-language-model's, for language models) starts a run
(deployments/prefect.yaml).

A duplicate starts nothing new, twice over: the event id is derived from the version and
its configuration, and Prefect's trigger service ignores an event id it has seen; and the
receiver marks the version (tag quantmill.requested = event id) once emitted, and emits
nothing for a version already marked with the same id.

Run with `quantmill webhook serve`; point MLflow at it with `quantmill webhook register`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prefect.events import Event
from prefect.events.clients import get_events_client

from quantmill.registry_events import (
    EVENT,
    REQUESTED,
    WEBHOOK_EVENTS,
    QuantizeRequest,
    WebhookRejected,
    request_from_tags,
    verify_delivery,
)
from quantmill.tracking.registry import model_version_tags, tag_model_version

SECRET_ENV = "QUANTMILL_WEBHOOK_SECRET"
_MAX_BODY = 1 << 20
SOCKET_TIMEOUT_S = 10
MAX_CONNECTIONS = 16
logger = logging.getLogger("quantmill.webhook")


def handle_delivery(secret: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    """Return the HTTP status and message for one webhook delivery: 401 for a delivery that
    fails verification, 202 for one that asks for nothing, 200 once the version's event was
    emitted (or already had been). Errors reaching MLflow or Prefect propagate, so MLflow
    retries the delivery."""
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
    if tags.get(REQUESTED) == event_id:
        return 200, f"duplicate: {request.model_uri} already requested as event {event_id}"
    asyncio.run(_emit(request))
    tag_model_version(name, version, REQUESTED, event_id)
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
    # At most MAX_CONNECTIONS deliveries in flight; further connections wait in the listen
    # backlog instead of each getting a thread.
    daemon_threads = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def serve(host: str, port: int, secret: str) -> ThreadingHTTPServer:
    """Return a started-on-demand HTTP server (call serve_forever) that handles MLflow's
    webhook POSTs on any path: 411 without a usable Content-Length and 413 above 1 MiB,
    both before reading the body; a socket timeout; at most MAX_CONNECTIONS at once."""

    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_S

        def do_POST(self) -> None:
            declared = self.headers.get("Content-Length", "")
            if not (declared.isascii() and declared.isdigit()):
                return self._reply(411, "a Content-Length of 0 or more bytes is required")
            if int(declared) > _MAX_BODY:
                return self._reply(413, f"body over {_MAX_BODY} bytes")
            body = self.rfile.read(int(declared))
            try:
                status, message = handle_delivery(secret, dict(self.headers.items()), body)
            except Exception as err:  # noqa: BLE001 - any failure downstream: 503 so MLflow retries
                logger.exception("webhook delivery failed")
                status, message = 503, f"{type(err).__name__}: {err}"
            self._reply(status, message)

        def do_GET(self) -> None:
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


def secret_from_env() -> str:
    """Return the shared webhook secret from $QUANTMILL_WEBHOOK_SECRET. Raises SystemExit if unset."""
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise SystemExit(f"quantmill: error: set {SECRET_ENV} to the secret shared with MLflow's webhook")
    return secret
