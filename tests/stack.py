"""The servers the orchestration tests run against, started here on loopback: an S3 API
(moto's server mode, in this process so it can be stopped and restarted with its data), an
MLflow tracking server on SQLite with its artifact store on that S3, a Prefect server on
PostgreSQL (as deployed: on SQLite, six concurrent runs met "database is locked" answered as
503 until a run failed) whose task results and cache records go to that S3, a process worker
per hardware target's pool (cpu, gpu), and quantmill's registry webhook receiver."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from quantmill.targets import TARGETS

REPO = Path(__file__).resolve().parent.parent
POOLS = tuple(dict.fromkeys(t.pool for t in TARGETS.values()))
BIN = Path(sys.executable).parent
SECRET = "test-webhook-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, seconds: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError as err:
            if getattr(err, "code", None) and err.code < 500:
                return
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    s3_server: object
    s3_port: int
    prefect_url: str
    mlflow_url: str
    webhook_url: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def start(self, name: str, *command: str) -> subprocess.Popen:
        self.commands[name] = command
        log = open(self.root / f"{name}.log", "ab")
        process = subprocess.Popen(list(command), cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes[name] = process
        return process

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, name: str) -> subprocess.Popen:
        """Stop the process name and start it again with the same command."""
        self.stop(name)
        return self.start(name, *self.commands[name])

    def kill(self, name: str) -> None:
        """SIGKILL the process name and its process group, as a lost machine would end it."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def run(self, *command: str) -> str:
        done = subprocess.run(list(command), cwd=REPO, env=self.env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def start_worker(self, pool: str) -> None:
        self.start(f"worker-{pool}", str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process",
                   "--name", f"test-{pool}")

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        # Newest first, so PostgreSQL stops after the server that holds its connections.
        for name in reversed(list(self.processes)):
            self.stop(name)
        self.s3_server.stop()
        data = self.root / "postgres-data"
        if data.is_symlink():
            shutil.rmtree(data.resolve(), ignore_errors=True)


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} not found on PATH or under /usr/lib/postgresql: "
                           "`make test-orchestration` installs it (Debian package postgresql)")
    return found


def start_postgres(stack: Stack, port: int) -> str:
    """Start a PostgreSQL cluster of its own on loopback port (as user postgres when run as
    root, which PostgreSQL refuses); returns the Prefect server's database URL.

    Raises RuntimeError when PostgreSQL's binaries are missing or initdb fails."""
    as_root = os.geteuid() == 0
    # Under /tmp, not the test's folder: pytest's folders are private to root, which postgres cannot enter.
    data = Path(tempfile.mkdtemp(prefix="quantmill-pg-"))
    os.symlink(data, stack.root / "postgres-data")
    user = "postgres" if as_root else None
    if as_root:
        shutil.chown(data, user="postgres", group="postgres")
    done = subprocess.run([_postgres_bin("initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                          capture_output=True, text=True, user=user, cwd=data)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
    log = open(stack.root / "postgres.log", "ab")
    stack.processes["postgres"] = subprocess.Popen(
        [_postgres_bin("postgres"), "-D", str(data / "db"), "-h", "127.0.0.1", "-p", str(port), "-k", str(data),
         "-c", "max_connections=200", "-c", "fsync=off"],
        cwd=data, stdout=log, stderr=subprocess.STDOUT, user=user, start_new_session=True)
    deadline = time.monotonic() + 60
    while subprocess.run([_postgres_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode != 0:
        if stack.processes["postgres"].poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"postgres did not start: {stack.log('postgres')[-2000:]}")
        time.sleep(0.3)
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"


def start_stack(root: Path) -> Stack:
    import boto3
    from cryptography.fernet import Fernet
    from moto.server import ThreadedMotoServer

    s3_port, prefect_port, mlflow_port, webhook_port, postgres_port = (free_port() for _ in range(5))
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port)
    s3.start()
    endpoint = f"http://127.0.0.1:{s3_port}"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": endpoint, "QUANTMILL_S3_BUCKET": "artifacts", "QUANTMILL_S3_PREFIX": "quantmill",
        "QUANTMILL_S3_ENDPOINT_URL": endpoint,
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        # MLflow refuses webhook targets on private addresses, and plain http, unless told otherwise.
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true", "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "PREFECT_HOME": str(root / "prefect-home"), "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
        "QUANTMILL_ROOT": str(REPO), "QUANTMILL_HOME": str(root / "worker-home"),
        "QUANTMILL_WEBHOOK_SECRET": SECRET, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
        # The tests tag versions with data among the cached test models, and with files of their own.
        "QUANTMILL_DATA_ROOTS": os.pathsep.join([str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "quantmill"),
                                                 str(root)]),
        # One key for every start of the MLflow server: it encrypts the webhook's secret.
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    env.pop("PREFECT_PROFILES_PATH", None)
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket="artifacts")
    stack = Stack(root, env, s3, s3_port, f"http://127.0.0.1:{prefect_port}/api", env["MLFLOW_TRACKING_URI"],
                  f"http://127.0.0.1:{webhook_port}/")
    try:
        stack.env["PREFECT_API_DATABASE_CONNECTION_URL"] = start_postgres(stack, postgres_port)
        prefect = stack.start("prefect-server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                              "--port", str(prefect_port), "--no-ui", "--analytics-off")
        mlflow = stack.start("mlflow-server", str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--artifacts-destination", "s3://artifacts/mlflow", "--workers", "1")
        wait_http(f"{stack.prefect_url}/health", 120, prefect)
        wait_http(f"{stack.mlflow_url}/health", 120, mlflow)
        for pool in POOLS:
            stack.run(str(BIN / "prefect"), "work-pool", "create", pool, "--type", "process")
        # Task results and cache records on S3, as in the deployed stack.
        stack.run(str(BIN / "quantmill"), "results-storage")
        stack.env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] = "s3-bucket/quantmill-results"
        stack.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
        for pool in POOLS:
            stack.start_worker(pool)
        receiver = stack.start("webhook", str(BIN / "quantmill"), "webhook", "serve", "--host", "127.0.0.1",
                               "--port", str(webhook_port))
        wait_http(stack.webhook_url, 60, receiver)
    except BaseException:
        stack.close()
        raise
    return stack


def copy_logs(stack: Stack, dest: Path) -> None:
    """Keep the servers' logs beside the test's output for a failure's post-mortem."""
    dest.mkdir(parents=True, exist_ok=True)
    for log in stack.root.glob("*.log"):
        shutil.copy(log, dest / log.name)
