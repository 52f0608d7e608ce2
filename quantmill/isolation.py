"""Native code at arm's length: llama.cpp, ONNX Runtime and the quantizers run in child
processes, so that a segfault, an abort or the OOM killer ends one call, never the run.

One persistent worker per name (a runtime, or "quantize"), started on first use and
recreated after a crash, keeps the fixed cost of a call low: the worker has imported its
libraries once. A worker that dies mid-call becomes a WorkerCrashed naming the signal and
the last lines of its stderr. Every worker is stopped when this process exits, and stops by
itself when its parent goes (it polls for its parent, so not even a SIGKILL of the parent
leaves one behind).

Run as `python -m quantmill.isolation READ_FD WRITE_FD [PRELOAD ...]` it is such a worker.

Why by hand: multiprocessing's spawn re-imports the parent's __main__ (a pytest or Prefect
entry point) in every worker and gives no stderr of a dead child; concurrent.futures'
process pool reports only "a process terminated abruptly". The messages are pickles between
this process and its own child, never data read from a file or the network.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from quantmill.errors import QuantmillError

STDERR_LINES = 20
# A call still running after this long is hung: its worker is killed (a task's own time
# limit cannot stop a worker process, only the thread waiting for it).
CALL_TIMEOUT_S = 1800
_HEADER = struct.Struct("!Q")


class WorkerCrashed(QuantmillError):
    """A worker process died during a call: killed by a signal (a crash in native code, an
    abort, the OOM killer) or exited. Carries the signal's name (None for an exit), the
    exit status and the last lines of the worker's stderr."""

    def __init__(self, what: str, returncode: int, stderr_tail: str):
        self.signal = signal.Signals(-returncode).name if returncode < 0 else None
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        how = f"killed by {self.signal}" if self.signal else f"exit status {returncode}"
        if self.signal == "SIGKILL":
            how += " (the OOM killer, or a kill)"
        tail = stderr_tail.strip().splitlines()[-3:]
        self.what = what
        super().__init__(f"{what}: {how}" + (f"; stderr ends: {' | '.join(tail)}" if tail else ""))

    def __reduce__(self):
        return type(self), (self.what, self.returncode, self.stderr_tail)


class WorkerTimeout(QuantmillError):
    """A call ran past its time limit; its worker was killed."""


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(fd, _HEADER.pack(len(data)) + data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _receive(fd: int) -> object:
    size = _HEADER.unpack(_read_exactly(fd, _HEADER.size))[0]
    return pickle.loads(_read_exactly(fd, size))


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 24))
        if not chunk:
            raise EOFError("the other end of the worker pipe closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class _Relay:
    """A progress callback inside the worker: forwards (done, total) to the parent."""

    def __init__(self, fd: int):
        self.fd = fd

    def __call__(self, done: int, total: int) -> None:
        _send(self.fd, ("progress", done, total))


class Worker:
    """One persistent child process that runs calls one at a time."""

    def __init__(self, name: str, preload: tuple[str, ...] = ()):
        self.name = name
        self.preload = preload
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """Return the worker's process id while it runs, else None."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def _start(self) -> None:
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "quantmill.isolation", str(to_child), str(from_child), *self.preload],
            pass_fds=(to_child, from_child), stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
        )
        os.close(to_child)
        os.close(from_child)
        self._write, self._read = from_parent, to_parent

    def _tail(self) -> str:
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - 16384))
        lines = self._stderr.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-STDERR_LINES:])

    def call(self, what: str, fn: Callable, *args, progress: Callable[[int, int], None] | None = None,
             timeout: float | None = None, **kwargs):
        """Return fn(*args, **kwargs) computed in the worker (fn and its arguments must
        pickle); with progress, fn gets a progress callback whose calls reach progress here.
        Raises what fn raised; WorkerCrashed when the worker dies (it is started afresh on the
        next call); WorkerTimeout after timeout seconds (the worker is killed)."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            self._stderr.seek(0)
            self._stderr.truncate()
            fired = threading.Event()
            timer = threading.Timer(timeout, lambda p=self._process: (fired.set(), p.kill())) if timeout else None
            if timer:
                timer.start()
            try:
                _send(self._write, (fn, args, kwargs, progress is not None))
                while True:
                    kind, *payload = _receive(self._read)
                    if kind == "progress":
                        progress(*payload)
                        continue
                    break
            except (EOFError, BrokenPipeError, OSError):
                returncode, tail = self._process.wait(), self._tail()
                self._close()
                if fired.is_set():
                    raise WorkerTimeout(f"{what} ran past {timeout:g} s; its {self.name} worker was killed") from None
                raise WorkerCrashed(f"{what} (its {self.name} worker)", returncode, tail) from None
            finally:
                if timer:
                    timer.cancel()
        if kind == "error":
            raise payload[0]
        return payload[0]

    def _close(self) -> None:
        for fd in (self._write, self._read):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stderr.close()
        self._process = None

    def stop(self) -> None:
        """Stop the worker (and wait for it), if it runs."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close()


def run_command(command: list[str], what: str, timeout: float, env: dict[str, str] | None = None,
                merge_stderr: bool = False) -> str:
    """Run command (a native tool, or a one-shot measuring process) and return its stdout,
    with its stderr in it where merge_stderr (llama.cpp's programs log their results there).
    Raises WorkerCrashed with the signal or exit status and the tail of its stderr when it
    fails; WorkerTimeout when it runs past timeout seconds (it is killed)."""
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                              text=True, env=env, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise WorkerTimeout(f"{what} ran past {timeout:g} s and was killed") from None
    if done.returncode != 0:
        # Warnings can follow the error; a crash in native code leaves no Python error at all.
        lines = [line for line in (done.stderr or done.stdout).splitlines() if "Warning" not in line]
        raise WorkerCrashed(what, done.returncode, "\n".join(lines[-STDERR_LINES:]))
    return done.stdout


@dataclass(frozen=True)
class Measured:
    """What run_measured saw of a program: its stdout, when each of its stderr lines that
    start with a marker came (seconds since the start), and its peak resident memory."""

    stdout: str
    marks: dict[str, float]
    peak_rss_bytes: int


def run_measured(command: list[str], what: str, timeout: float, marker: str) -> Measured:
    """Run command (a native program that measures itself, e.g. llama-bench) and return its
    stdout, the times its stderr lines starting with marker arrived, and its own peak RSS.
    Raises WorkerCrashed with the signal or exit status and the tail of its other stderr
    lines when it fails; WorkerTimeout when it runs past timeout seconds (it is killed).

    By hand, because subprocess.run neither timestamps lines as they come nor reports a
    child's own resource usage (RUSAGE_CHILDREN mixes every child this process waited for);
    os.wait4 reports this one's."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    marks: dict[str, float] = {}
    tail: deque[str] = deque(maxlen=STDERR_LINES)
    try:
        for line in proc.stderr:
            if line.startswith(marker):
                marks.setdefault(line.strip(), time.perf_counter() - start)
            else:
                tail.append(line.rstrip())
        reader.join()
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        timer.cancel()
        proc.stdout.close()
        proc.stderr.close()
    returncode = proc.returncode = os.waitstatus_to_exitcode(status)
    if killed.is_set():
        raise WorkerTimeout(f"{what} ran past {timeout:g} s and was killed")
    if returncode != 0:
        raise WorkerCrashed(what, returncode, "\n".join(tail))
    # ru_maxrss is in KiB on Linux.
    return Measured("".join(out), marks, usage.ru_maxrss * 1024)


def failure_details(err: BaseException) -> dict:
    """Return what a failed attempt's record adds for err: the signal and the tail of stderr
    of a crashed worker or tool; nothing for other errors."""
    if isinstance(err, WorkerCrashed):
        return {"signal": err.signal, "exit_status": err.returncode, "stderr_tail": err.stderr_tail}
    return {}


_WORKERS: dict[str, Worker] = {}
_WORKERS_LOCK = threading.Lock()


def worker(name: str, preload: tuple[str, ...] = ()) -> Worker:
    """Return the persistent worker called name (made on first use), whose process imports
    the modules preload before anything else."""
    with _WORKERS_LOCK:
        if name not in _WORKERS:
            _WORKERS[name] = Worker(name, preload)
        return _WORKERS[name]


def in_worker(name: str, what: str, fn: Callable, *args, preload: tuple[str, ...] = (),
              progress: Callable[[int, int], None] | None = None, timeout: float = CALL_TIMEOUT_S, **kwargs):
    """Return fn(*args, **kwargs) computed in the persistent worker called name (Worker.call),
    killed after timeout seconds. Inside a worker it runs fn here: a worker's calls never
    start workers of their own."""
    if os.environ.get(_INSIDE) == "1":
        return fn(*args, **({**kwargs, "progress": progress} if progress is not None else kwargs))
    return worker(name, preload).call(what, fn, *args, progress=progress, timeout=timeout, **kwargs)


def worker_pids() -> dict[str, int]:
    """Return the process id of each running worker, by name."""
    return {name: w.pid for name, w in _WORKERS.items() if w.pid is not None}


def stop_workers() -> None:
    """Stop every worker this process started."""
    for w in list(_WORKERS.values()):
        w.stop()


atexit.register(stop_workers)

_INSIDE = "QUANTMILL_IN_WORKER"


def _watch_parent(parent: int) -> None:
    # A worker whose parent is gone (even killed with SIGKILL, which runs no atexit) ends
    # itself rather than outlive the run; a busy worker cannot notice a closed pipe.
    while True:
        threading.Event().wait(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _serve(read_fd: int, write_fd: int) -> None:
    os.environ[_INSIDE] = "1"
    # Ctrl-C reaches the whole process group: the parent decides, and stops its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    while True:
        try:
            fn, args, kwargs, relay = _receive(read_fd)
        except EOFError:
            return
        if relay:
            kwargs["progress"] = _Relay(write_fd)
        try:
            result = ("ok", fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - every error goes back to the caller
            result = ("error", _picklable(err))
        _send(write_fd, result)


def _picklable(err: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - an error that cannot travel is described instead
        return RuntimeError(f"{type(err).__name__}: {err}")


if __name__ == "__main__":
    for module in sys.argv[3:]:
        __import__(module)
    _serve(int(sys.argv[1]), int(sys.argv[2]))
    sys.stdout.flush()
    os._exit(0)
