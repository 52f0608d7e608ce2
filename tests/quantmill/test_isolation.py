"""Native code at arm's length: real signals delivered to real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from quantmill.isolation import (
    WorkerCrashed,
    WorkerTimeout,
    in_worker,
    run_command,
    run_measured,
    stop_workers,
    worker_pids,
)
from quantmill.runtimes.decode import interleaved_rounds
from tests.crashing import CRASH, LAST_WORDS, segfault


def _pid() -> int:
    return os.getpid()


def _abort() -> None:
    print("about to abort", file=sys.stderr, flush=True)
    os.abort()


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _progress(progress=None) -> str:
    for done in range(3):
        progress(done + 1, 3)
    return "done"


@pytest.fixture(autouse=True)
def _stopped():
    yield
    stop_workers()


def test_a_segfault_in_a_worker_is_an_error_here_and_the_next_call_gets_a_fresh_worker():
    first = in_worker("test", "pid", _pid)
    assert first != os.getpid() and in_worker("test", "pid", _pid) == first, "one persistent worker"
    with pytest.raises(WorkerCrashed) as crash:
        in_worker("test", "segfaulting on purpose", segfault, "a test")
    assert crash.value.signal == "SIGSEGV" and crash.value.returncode == -signal.SIGSEGV
    assert f"{LAST_WORDS} a test" in crash.value.stderr_tail and "SIGSEGV" in str(crash.value)
    again = in_worker("test", "pid", _pid)
    assert again not in (first, os.getpid())


def test_an_abort_and_a_kill_are_named_by_their_signal():
    with pytest.raises(WorkerCrashed) as crash:
        in_worker("test", "aborting", _abort)
    assert crash.value.signal == "SIGABRT" and "about to abort" in crash.value.stderr_tail
    in_worker("test", "pid", _pid)
    os.kill(worker_pids()["test"], signal.SIGKILL)
    time.sleep(0.2)
    assert in_worker("test", "pid", _pid), "a worker killed between calls is started again"


def test_a_call_past_its_time_kills_the_worker():
    with pytest.raises(WorkerTimeout):
        in_worker("test", "sleeping", _sleep, 30, timeout=1)
    assert in_worker("test", "pid", _pid)


def test_progress_inside_a_worker_reaches_the_caller():
    heard = []
    assert in_worker("test", "progress", _progress, progress=lambda done, total: heard.append((done, total))) == "done"
    assert heard == [(1, 3), (2, 3), (3, 3)]


def test_a_worker_ends_when_its_parent_is_killed():
    parent = subprocess.Popen(
        [sys.executable, "-c", "from quantmill.isolation import worker_pids, in_worker; import os, time\n"
                               "in_worker('orphan', 'pid', os.getpid); print(worker_pids()['orphan'], flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.2)
    assert not _alive(child), "the worker outlived its killed parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_crashed_measuring_process_is_left_out_and_the_rounds_go_on():
    def run_one(label: str) -> dict:
        if label == "crashes":
            run_command([sys.executable, "-c", CRASH], "a benchmark that crashes", 60)
        return {"value": float(run_command([sys.executable, "-c", "print(1.0)"], "a benchmark", 60))}

    runs, crashed = interleaved_rounds(["baseline", "crashes", "fine"], run_one, lambda runs, pair: True,
                                       ("crashes", "baseline"), 3, 9, None)
    assert set(runs) == {"baseline", "fine"} and all(len(r) == 3 for r in runs.values())
    assert crashed["crashes"].signal == "SIGSEGV" and f"{LAST_WORDS} a benchmark" in crashed["crashes"].stderr_tail


MEASURING = """
import sys, time
print("bench: starting", file=sys.stderr, flush=True)
print("loading weights", file=sys.stderr, flush=True)
block = bytearray(200 * 2**20)
time.sleep(0.3)
print("bench: ready", file=sys.stderr, flush=True)
print('{"tokens_per_s": 12.5}')
"""


def test_a_measured_program_gives_its_output_when_its_marks_came_and_its_own_peak_memory():
    measured = run_measured([sys.executable, "-c", MEASURING], "a measuring program", 60, "bench:")
    assert measured.stdout.strip() == '{"tokens_per_s": 12.5}'
    assert list(measured.marks) == ["bench: starting", "bench: ready"]
    assert measured.marks["bench: ready"] - measured.marks["bench: starting"] >= 0.3
    # Its own peak, not this process's: the 200 MiB block was allocated there only.
    assert measured.peak_rss_bytes >= 200 * 2**20


def test_a_measured_program_that_crashes_or_hangs_is_an_error_and_is_gone():
    with pytest.raises(WorkerCrashed) as crashed:
        run_measured([sys.executable, "-c", CRASH], "a crashing benchmark", 60, "bench:")
    assert crashed.value.signal == "SIGSEGV" and LAST_WORDS in crashed.value.stderr_tail
    started = time.monotonic()
    with pytest.raises(WorkerTimeout, match="ran past 1 s"):
        run_measured([sys.executable, "-c", "import time; time.sleep(60)"], "a hung benchmark", 1, "bench:")
    assert time.monotonic() - started < 10
