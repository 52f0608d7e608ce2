"""A native crash is a failed attempt, not a dead run, and a run leaves no process behind:
real signals delivered to the real worker processes that quantize, evaluate and benchmark,
through the flow and through the `quantmill` command in a process of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

import quantmill.formats as formats
from flows.cli import EXIT_BAD_INPUT, EXIT_CODES, main
from quantmill.runtimes import RUNTIMES
from quantmill.tracking.client import client
from tests.crashing import LAST_WORDS, CrashingOnnxRuntime, crash_formats

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.usefixtures("prefect_api")
def test_a_crash_in_quantize_evaluate_or_benchmark_fails_that_attempt_and_the_run_goes_on(
        digits, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(formats, "FORMATS", {**crash_formats(), **formats.FORMATS})
    monkeypatch.setitem(RUNTIMES, "onnxruntime", CrashingOnnxRuntime())
    empty_table = tmp_path / "table"
    empty_table.mkdir()
    out = tmp_path / "out"
    # An empty table: the conservative candidates, the crashing ones first; a search, so that
    # every attempt within budget is benchmarked, the crashing one among them.
    code = main(["run", str(digits.model), "--task", "classification", "--calibration-data", str(digits.calibration),
                 "--eval-data", str(digits.evaluation), "--out", str(out), "--benchmark-table", str(empty_table),
                 "--benchmark-seconds", "0.2", "--search-seconds", "600", "--max-accuracy-drop", "5"])
    report = json.loads((out / "report.json").read_text())
    failures = {f["format"]: f for f in report["failures"]}
    assert set(failures) == set(crash_formats()), report["failures"]
    for name, stage in (("crash-in-quantize", "quantize"), ("crash-in-evaluate", "evaluate"),
                        ("crash-in-benchmark", "a benchmark")):
        assert failures[name]["signal"] == "SIGSEGV", failures[name]
        assert f"{LAST_WORDS} {stage}" in failures[name]["stderr_tail"]
        assert "SIGSEGV" in failures[name]["reason"]
    # The run went on: the real formats after them were tried, and one of them ships.
    assert report["attempts"] and not {a["format"] for a in report["attempts"]} & set(crash_formats())
    assert code == EXIT_CODES[report["gate"]["status"]]
    chosen = next(a for a in report["attempts"] if a["index"] == report["gate"]["chosen_attempt"])
    assert chosen["format"] not in crash_formats()
    html = (out / "report.html").read_text()
    assert html.count("SIGSEGV") >= 3 and f"{LAST_WORDS} evaluate" in html
    run = mlflow.get_run(report["mlflow"]["run_id"])
    tags = [v for k, v in run.data.tags.items() if k.startswith("quantmill.failed_attempt.")]
    assert sorted(t.split(":")[0] for t in tags) == sorted(crash_formats())
    if report["mlflow"].get("version"):
        registered = client().get_model_version(report["mlflow"]["registered_model"], report["mlflow"]["version"])
        assert registered.tags["format"] not in crash_formats()


def _session_processes(sid: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(f"{entry.name}: {cmdline[:160]}")
    return found


def _quantmill(args: list[str], home: Path, crashing: bool = False) -> subprocess.Popen:
    setup = "import tests.crashing; tests.crashing.install(); " if crashing else ""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"QUANTMILL_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", f"import sys; {setup}from flows.cli import main; sys.exit(main({args!r}))"],
        cwd=REPO, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _left_behind(process: subprocess.Popen) -> list[str]:
    deadline = time.monotonic() + 15
    while (left := _session_processes(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _digits_args(digits, out: Path, *more: str) -> list[str]:
    return ["run", str(digits.model), "--task", "classification", "--calibration-data", str(digits.calibration),
            "--eval-data", str(digits.evaluation), "--out", str(out), "--benchmark-seconds", "0.2", *more]


@pytest.mark.slow
def test_a_run_leaves_no_process_after_bad_input_a_crashed_attempt_or_sigterm(digits, tmp_path):
    bad = _quantmill(_digits_args(digits, tmp_path / "bad", "--max-accuracy-drop", "-1"), tmp_path / "home1")
    assert bad.wait(timeout=300) == EXIT_BAD_INPUT, bad.stdout.read()
    assert not _left_behind(bad)

    table = tmp_path / "table"
    table.mkdir()
    crashed = _quantmill(_digits_args(digits, tmp_path / "crashed", "--benchmark-table", str(table), "--no-register"),
                         tmp_path / "home2", crashing=True)
    printed = crashed.communicate(timeout=600)[0]
    assert crashed.returncode in (0, 1, 3), printed
    assert "SIGSEGV" in printed and "Traceback" not in printed.split("gate")[-1]
    assert not _left_behind(crashed), "processes left after a crashed attempt"

    running = _quantmill(_digits_args(digits, tmp_path / "term", "--benchmark-table", str(table), "--no-register"),
                         tmp_path / "home3")
    deadline = time.monotonic() + 300
    # Mid-run: the temporary server is up and a worker has started.
    while not any("quantmill.isolation" in p for p in _session_processes(running.pid)):
        assert running.poll() is None and time.monotonic() < deadline, running.stdout.read()
        time.sleep(0.2)
    running.send_signal(signal.SIGTERM)
    running.communicate(timeout=60)
    assert running.returncode != 0
    assert not _left_behind(running), "processes left after SIGTERM"
