"""What a run costs beyond its model's own work: `quantmill run` on a 6,010-parameter MLP
(scikit-learn's digits, trained here in a second), timed as a user's process sees it, with
Prefect's temporary server (nothing configured) and against a Prefect server already running
on loopback (PREFECT_API_URL set, as on a workstation that keeps `prefect server start` up).

Every run is an unchanged re-run after one warm-up, so quantize and evaluate come from
Prefect's cache. The benchmark is measured afresh in every run (0.05 s per batch size, in
as many rounds as the judged ratio needs to settle), so it is timed apart, from the
flow's own log: the fixed cost is the rest (imports, the API, the flow's bookkeeping,
MLflow's record). Prints per setting the medians over the runs, with min-max, of the wall
time, the time before the flow's first line, the benchmark task, the record task and the
fixed cost, and the import time alone (`python -c "import flows.quantize_model"`), all
measured in this run.

    .venv/bin/python benchmarks/fixed_cost.py [--runs 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from quantmill.atomic import atomic_file
from quantmill.hardware import local_cpu
from quantmill.state import quantmill_home
from quantmill.zoo.digits import INPUT, DigitsFiles, build_digits

SERVER_START_S = 120


def build_mlp(digits: DigitsFiles, directory: Path) -> Path:
    """Train a 64-80-10 MLP on the digits CNN's calibration samples (seeded, 200 full-batch
    steps) and export it to ONNX; return its path."""
    data = np.load(digits.calibration)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 80), torch.nn.ReLU(), torch.nn.Linear(80, 10))
    x, y = torch.from_numpy(data[INPUT]), torch.from_numpy(data["labels"]).long()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    path = directory / "mlp.onnx"
    with torch.no_grad(), atomic_file(path) as tmp:
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(tmp), dynamo=False, opset_version=17,
                          input_names=[INPUT], output_names=["logits"],
                          dynamic_axes={INPUT: {0: "batch"}, "logits": {0: "batch"}})
    print(f"MLP: {sum(p.numel() for p in net.parameters()):,} parameters")
    return path


LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+ +\| (.*)$")


def timed_run(model: Path, digits: DigitsFiles, out: Path, env: dict[str, str]) -> dict[str, float]:
    """Return the seconds of one `quantmill run` process: wall, before the flow's first log
    line, the benchmark and record tasks (from the previous log line to theirs), and fixed
    (wall less the benchmark). Raises CalledProcessError when it exits with bad input (2)
    or a crash."""
    began = datetime.datetime.now()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(model), "--task", "classification",
                           "--calibration-data", str(digits.calibration), "--eval-data", str(digits.evaluation),
                           "--max-accuracy-drop", "1", "--no-register", "--out", str(out), "--benchmark-seconds", "0.05"],
                          env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1, 3):
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    lines = []
    for line in (done.stdout + done.stderr).splitlines():
        if match := LOG_LINE.match(line):
            clock = datetime.datetime.combine(began.date(), datetime.time.fromisoformat(match[1]))
            lines.append(((clock - began).total_seconds(), match[2]))
    lines.sort()

    def task(name: str) -> float:
        at = next(i for i, (_, text) in enumerate(lines) if re.match(rf"Task run '{name}-\w+' - Finished", text))
        return lines[at][0] - lines[at - 1][0]

    first = next(t for t, text in lines if "Beginning flow run" in text)
    benchmark = task("benchmark")
    return {"wall": wall, "before the flow": first, "benchmark": benchmark, "record": task("record"),
            "fixed": wall - benchmark}


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    """Start `prefect server start` on a free loopback port; return it and its API URL once
    healthy. Raises RuntimeError when it is not within SERVER_START_S."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"prefect server start did not answer on {url} within {SERVER_START_S} s")


def summary(times: list[float]) -> str:
    """Return 'median s (min-max)'."""
    return f"{statistics.median(times):.1f} s ({min(times):.1f}-{max(times):.1f})"


def medians(runs: list[dict[str, float]]) -> str:
    """Return each timed part's summary over runs, on one line."""
    return "; ".join(f"{part} {summary([run[part] for run in runs])}" for part in runs[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import onnxruntime

    print(f"hardware: {local_cpu(f'onnxruntime {onnxruntime.__version__}').describe()}")
    with tempfile.TemporaryDirectory(prefix="quantmill-fixed-cost-") as scratch:
        root = Path(scratch)
        digits = build_digits(quantmill_home() / "models" / "digits")
        model = build_mlp(digits, root)
        imports = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import flows.quantize_model"], check=True)
            imports.append(time.perf_counter() - start)
        base = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
        temporary = {**base, "PREFECT_HOME": str(root / "prefect-temporary")}
        server, url = start_server(root / "prefect-server")
        running = {**base, "PREFECT_HOME": str(root / "prefect-client"), "PREFECT_API_URL": url}
        try:
            results = {}
            for name, env in (("temporary server", temporary), ("running server", running)):
                timed_run(model, digits, root / "warm-up", env)
                results[name] = [timed_run(model, digits, root / f"{name}-{i}", env) for i in range(args.runs)]
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"import flows.quantize_model: {summary(imports)}")
    for name, runs in results.items():
        print(f"quantmill run, {name}, {args.runs} runs: {medians(runs)}")
    ratio = statistics.median(r["fixed"] for r in results["running server"]) / statistics.median(
        r["fixed"] for r in results["temporary server"])
    print(f"fixed cost, running server / temporary server: {ratio:.2f}x")


if __name__ == "__main__":
    main()
