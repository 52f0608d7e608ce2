"""Benchmarking on one hardware target: every model measured by its own runtime on this
worker, the full-precision baseline among them, or the reason this worker cannot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from quantmill.data import Dataset
from quantmill.formats.base import Format
from quantmill.hardware import Hardware, HardwareUnavailable, local_hardware
from quantmill.isolation import failure_details
from quantmill.progress import Progress
from quantmill.runtimes import get_runtime
from quantmill.speed import THROUGHPUT
from quantmill.targets import Target


@dataclass(frozen=True)
class TargetBenchmarks:
    """What one hardware target measured: a measurement per labelled model (full-precision
    baselines labelled by their format, attempts by their index) and the runtime that took it, on which
    hardware, by which flow run; or, when it measured nothing, the reason. failed holds the
    models whose measuring process crashed: label -> the failure (reason, and signal and
    stderr tail where a worker died)."""

    target: str
    benchmarks: dict
    hardware: Hardware | None = None
    reason: str | None = None
    flow_run: str | None = None
    runtimes: dict[str, str] = field(default_factory=dict)
    failed: dict[str, dict] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        """Return whether this target measured every model it was given."""
        return bool(self.benchmarks) and self.reason is None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict that from_dict() reads back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TargetBenchmarks:
        """Return the TargetBenchmarks that to_dict() wrote. Raises KeyError/TypeError on another shape."""
        hardware = data.get("hardware")
        runtimes = data.get("runtimes") or {}
        return cls(
            target=data["target"],
            benchmarks={label: get_runtime(runtimes[label]).measurement(**b) for label, b in data["benchmarks"].items()},
            hardware=Hardware(**{**hardware, "isa": tuple(hardware["isa"])}) if hardware else None,
            reason=data.get("reason"), flow_run=data.get("flow_run"), runtimes=runtimes,
            failed=data.get("failed") or {},
        )


def benchmark_target(
    target: Target, models: dict[str, tuple[Format, Path]], data: Dataset, seconds_per_batch: float = 1.0,
    judged: tuple[str, str] | None = None, objective: str = THROUGHPUT,
    progress_for: Callable[[str], Progress] | None = None,
) -> TargetBenchmarks:
    """Return the labelled models, each given as (format, path), measured on this machine for
    target by their formats' benchmark runners, the models of one runtime taking turns in one
    session of its harness, which measures until judged (the label of the attempt the gate
    will judge, and its baseline's) is settled beyond the noise on the figure objective
    judges; or, when this worker cannot run target or one of the runtimes on it, a
    TargetBenchmarks with the reason and no figures. progress_for(runtime name), when given,
    returns the Progress that hears that runtime's rounds. A model whose measuring process
    crashed is left out of the figures and named in failed; the others are measured as usual.
    """
    runner = {label: fmt.benchmark_runner() for label, (fmt, _) in models.items()}
    used = list({r.name: r for r in runner.values()}.values())
    runtime_reasons = [reason for runtime in used if (reason := runtime.unavailable(target))]
    try:
        hardware = local_hardware(target, "; ".join(runtime.describe(target) for runtime in used))
    except HardwareUnavailable as err:
        return TargetBenchmarks(target.name, {}, reason="; ".join([str(err), *runtime_reasons]))
    if runtime_reasons:
        return TargetBenchmarks(target.name, {}, hardware=hardware, reason="; ".join(runtime_reasons))
    measured = {}
    for runtime in used:
        group = {label: path for label, (_, path) in models.items() if runner[label].name == runtime.name}
        pair = judged if judged is not None and set(judged) <= set(group) else None
        progress = None if progress_for is None else progress_for(runtime.name)
        measured |= runtime.benchmark(group, data, target, seconds_per_batch, pair, objective, progress=progress)
    failed = {label: {"reason": f"{type(err).__name__}: {err}", **failure_details(err)}
              for label, err in measured.items() if isinstance(err, Exception)}
    return TargetBenchmarks(target.name, {label: measured[label] for label in models if label not in failed}, hardware,
                            runtimes={label: runner[label].name for label in models if label not in failed},
                            failed=failed)
