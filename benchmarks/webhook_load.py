"""The registry webhook receiver under load, with slow clients open: signed MLflow
deliveries for distinct model versions (each one Prefect event, emitted to a real Prefect
API: Prefect's own test server), sent by concurrent clients while slowloris connections
(a request line and one header, then nothing, reopened whenever the receiver closes them)
hold sockets open. Then the same deliveries again, every one a duplicate.

Prints events per second held and the latency percentiles (p50, p99, max) of each phase.
Model versions live in an MLflow store in a temporary folder (the digits CNN, registered
--versions times, each tagged to ask for quantization).

    .venv/bin/python benchmarks/webhook_load.py [--versions 60] [--clients 8] [--slowloris 20]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from mlflow.webhooks.delivery import _generate_hmac_signature

SECRET = "load-test-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _deliver(port: int, name: str, version: str) -> tuple[int, float]:
    body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "t",
                       "data": {"name": name, "version": version}})
    stamp = str(int(time.time()))
    head = (f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nX-MLflow-Delivery-Id: d-{version}\r\n"
            f"X-MLflow-Timestamp: {stamp}\r\nX-MLflow-Signature: {_generate_hmac_signature(SECRET, f'd-{version}', stamp, body)}"
            "\r\n\r\n")
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(head.encode() + body.encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), time.perf_counter() - started


def _slowloris(port: int, count: int, stop: threading.Event) -> list[int]:
    """Hold count slow connections open until stop, reopening each one the receiver closes;
    return how many times connections were closed on them."""
    closed = [0]

    def hold() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
                    conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
                    conn.recv(1024)
                    closed[0] += 1
            except OSError:
                time.sleep(0.1)

    for _ in range(count):
        threading.Thread(target=hold, daemon=True).start()
    return closed


def _phase(label: str, port: int, versions: list[str], clients: int) -> None:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda v: _deliver(port, "load", v), versions))
    elapsed = time.perf_counter() - started
    statuses = sorted({s for s, _ in results})
    latency = np.array([t for _, t in results]) * 1000
    print(f"{label:<28} {len(results):>6} {len(results) / elapsed:>10.1f} {np.percentile(latency, 50):>8.0f} "
          f"{np.percentile(latency, 99):>8.0f} {latency.max():>8.0f}  {statuses}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--slowloris", type=int, default=20)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="quantmill-webhook-load-"))
    os.environ["QUANTMILL_HOME"] = str(scratch / "home")
    from prefect.testing.utilities import prefect_test_harness

    from flows.registry_webhook import READ_DEADLINE_S, check_prefect_api, serve
    from quantmill.hardware import local_cpu
    from quantmill.models import register_source_model
    from quantmill.registry_events import EmittedEvents
    from quantmill.tracking.registry import tag_model_version
    from quantmill.zoo.digits import build_digits

    digits = build_digits(scratch / "digits")
    os.environ["QUANTMILL_DATA_ROOTS"] = str(scratch)
    print(f"hardware: {local_cpu('python http.server').describe()}")
    print(f"registering {args.versions} model versions in {scratch / 'home'} ...", flush=True)
    versions = []
    for _ in range(args.versions):
        version = register_source_model(digits.model, "load")
        for key, value in {"quantmill.task": "classification", "quantmill.calibration_data": str(digits.calibration),
                           "quantmill.eval_data": str(digits.evaluation)}.items():
            tag_model_version("load", version, key, value)
        versions.append(version)
    with prefect_test_harness(server_startup_timeout=120):
        print(f"Prefect API: {check_prefect_api()}")
        port = _free_port()
        server = serve("127.0.0.1", port, SECRET, EmittedEvents(scratch / "emitted.db"))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        stop = threading.Event()
        closed = _slowloris(port, args.slowloris, stop)
        time.sleep(1)
        print(f"\n{args.clients} concurrent clients, {args.slowloris} slowloris connections open "
              f"(read deadline {READ_DEADLINE_S} s); latency in ms")
        print(f"{'phase':<28} {'sent':>6} {'events/s':>10} {'p50':>8} {'p99':>8} {'max':>8}  statuses")
        _phase("new versions (emitted)", port, versions, args.clients)
        _phase("same again (duplicates)", port, versions, args.clients)
        stop.set()
        server.shutdown()
    print(f"\nslow connections closed by the deadline meanwhile: {closed[0]}")


if __name__ == "__main__":
    main()
