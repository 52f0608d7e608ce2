"""Benchmark models on this worker's hardware, or on a hardware pool's worker through the
benchmark-on-hardware deployment."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.states import Cancelled

from quantmill.benchmark import TargetBenchmarks, benchmark_target
from quantmill.data import Dataset
from quantmill.formats.base import Format
from quantmill.hardware import Hardware, local_cpu
from quantmill.models import Model
from quantmill.runtimes import get_runtime
from quantmill.speed import THROUGHPUT
from quantmill.targets import HOST, Target
from tasks.policy import EPHEMERAL, retried
from tasks.progress import artifact_progress

BENCHMARK_FLOW = "benchmark-on-hardware"
_POLL_SECONDS = 2.0


@task(name="benchmark", timeout_seconds=1800, **EPHEMERAL)
def benchmark_task(
    target: Target, models: dict[str, tuple[Format, Path]], data: Dataset, seconds_per_batch: float,
    judged: tuple[str, str] | None = None, objective: str = THROUGHPUT,
) -> TargetBenchmarks:
    """Return the labelled models, each given as (format, path), measured by their formats'
    benchmark runners on this machine's hardware for target (or the reason it cannot),
    until judged (the attempt the gate will judge, and its baseline) is settled on the
    figure objective judges."""
    return benchmark_target(target, models, data, seconds_per_batch, judged, objective,
                            lambda runtime: artifact_progress(f"benchmark on {target.name}, {runtime}: rounds"))


def measure(model: Model, models: dict[str, tuple[Format, Path]], evaluation: Dataset, eval_data: str,
            targets: tuple[Target, ...], on_pools: bool, seconds: float, judged: tuple[str, str] | None, objective: str,
            wait_seconds: float, purpose: str = "") -> list[TargetBenchmarks]:
    """Return the labelled models, each (format, path), measured on targets: here on the
    first target alone (benchmark_task), or, with on_pools, on each target's work pool at once
    (benchmark_on_pool_task, its run named by purpose); each target's hardware, or why it
    measured nothing, goes to the flow run's log."""
    if not on_pools:
        measured = [benchmark_task(targets[0], models, evaluation, seconds, judged, objective)]
    else:
        parameters = {
            "model": model.to_dict(), "eval_data": str(Path(eval_data).resolve()), "benchmark_seconds": seconds,
            "models": {label: {"format": fmt.name, "path": str(path)} for label, (fmt, path) in models.items()},
            "judged": None if judged is None else list(judged), "objective": objective,
        }
        futures = [benchmark_on_pool_task.submit(t, {**parameters, "target": t.name}, wait_seconds, purpose) for t in targets]
        measured = [f.result() for f in futures]
    for result in measured:
        get_run_logger().info("%s: %s", result.target,
                              result.hardware.describe() if result.measured else f"not benchmarked: {result.reason}")
    return measured


@task(name="describe-hardware", timeout_seconds=60, **EPHEMERAL)
def hardware_task(formats: list[Format]) -> Hardware:
    """Return this machine's CPU with the runtimes of formats."""
    runtimes = dict.fromkeys(fmt.runtime for fmt in formats)
    return local_cpu("; ".join(get_runtime(name).describe(HOST) for name in runtimes))


@task(name="benchmark-on-pool", timeout_seconds=3600, **retried(2), **EPHEMERAL)
def benchmark_on_pool_task(target: Target, parameters: dict, pickup_seconds: float, purpose: str = "") -> TargetBenchmarks:
    """Start the benchmark-on-hardware deployment of target's work pool, wait for it, and
    return what it measured. When no worker takes the run within pickup_seconds, the run is
    cancelled and the target comes back not benchmarked, with the reason; likewise when the
    run fails or crashes. purpose tells apart two measurements in one flow run (a search's
    confirming re-measure)."""
    pool = target.pool
    # Keyed on the calling flow run (and purpose), so a retry of this task finds its run instead of starting another.
    started = run_deployment(
        f"{BENCHMARK_FLOW}/{target.name}", parameters=parameters, timeout=0,
        idempotency_key=f"{flow_run.id}-{target.name}{purpose}" if flow_run.id else None,
    )
    with get_client(sync_client=True) as client:
        run = _wait(client, started.id, lambda r: r.state is not None and not (r.state.is_scheduled() or r.state.is_pending()),
                    pickup_seconds)
        if run.state is None or run.state.is_scheduled() or run.state.is_pending():
            client.set_flow_run_state(run.id, Cancelled(message=f"no worker within {pickup_seconds:g} s"), force=True)
            status = client.read_work_pool(pool).status
            return TargetBenchmarks(target.name, {}, flow_run=run.name, reason=(
                f"no worker on work pool '{pool}' took flow run '{run.name}' within {pickup_seconds:g} s "
                f"(pool status {status.value if status else 'unknown'}); the run was cancelled"
            ))
        run = _wait(client, run.id, lambda r: r.state.is_final(), None)
    if not run.state.is_completed():
        return TargetBenchmarks(target.name, {}, flow_run=run.name,
                                reason=f"flow run '{run.name}' ended {run.state.name}: {run.state.message}")
    measured = TargetBenchmarks.from_dict(run.state.result())
    return TargetBenchmarks(measured.target, measured.benchmarks, measured.hardware, measured.reason, run.name,
                            measured.runtimes, measured.failed)


def _wait(client, run_id, done, seconds: float | None):
    deadline = None if seconds is None else time.monotonic() + seconds
    run = client.read_flow_run(run_id)
    while not done(run) and (deadline is None or time.monotonic() < deadline):
        time.sleep(_POLL_SECONDS)
        run = client.read_flow_run(run_id)
    return run
