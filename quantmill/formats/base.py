"""The interface every format implements, and the escalation step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantmill.data import Dataset
from quantmill.hardware import Hardware
from quantmill.hashing import fingerprint
from quantmill.models.base import Model
from quantmill.progress import Progress
from quantmill.runtimes import get_runtime
from quantmill.targets import TARGETS

# A format's place when nothing is measured: formats whose accuracy does not hang on
# calibration come first, and the fallback closes every candidate list of its model kinds.
CONSERVATIVE, FALLBACK = "conservative", "fallback"


@dataclass(frozen=True)
class Step:
    """One attempt to make: the format, its options, and why it is being made."""

    format: str
    options: object
    reason: str


@dataclass(frozen=True)
class NoOptions:
    """Options of a format that has none."""

    def describe(self) -> str:
        """Return '' (nothing to add to the format's name)."""
        return ""


class Format:
    """A deployable format. Declares: name; description (the scheme in words); the model
    kinds it applies to; the runtime that evaluates and benchmarks it; whether it is
    calibrated; its place when nothing is measured (CONSERVATIVE, FALLBACK or None);
    whether it is a candidate or the full-precision baseline of its model kinds; and whether a miss
    escalates to a layerwise sensitivity scan. The targets it runs on are those offering
    its runtime.

    Hooks: ladder (the steps to try, in order, for a candidate), output_path and quantize,
    evaluation_runner and benchmark_runner (its runtime's, unless a format says otherwise),
    artifact_files, register.
    """

    name: str
    description: str
    kinds: tuple[str, ...]
    runtime: str
    calibrated: bool = False
    safety: str | None = None
    candidate: bool = True
    scans_sensitivity: bool = False

    def __repr__(self) -> str:
        # Stable across processes: a task's cache key fingerprints its arguments by repr.
        return f"{type(self).__name__}({self.name!r})"

    @property
    def targets(self) -> tuple[str, ...]:
        """Return the hardware targets offering this format's runtime."""
        return tuple(t.name for t in TARGETS.values() if self.runtime in t.runtimes)

    def default_options(self, hardware: Hardware) -> object:
        """Return the options of this format's first attempt on hardware."""
        return NoOptions()

    def ladder(self, reason: str, hardware: Hardware) -> tuple[Step, ...]:
        """Return the steps to try for this format as a candidate chosen for reason: the
        first attempt, then the escalation steps that follow a missed budget."""
        return (Step(self.name, self.default_options(hardware), f"candidate: {reason}"),)

    def search_moves(self, options: object) -> tuple[Step, ...]:
        """Return the steps a search tries beyond the ladder around an attempt made with
        options within budget: other mixes of precision. None unless a format has them."""
        return ()

    def uses_calibration(self, options: object) -> bool:
        """Return whether quantizing with options reads the calibration samples."""
        return self.calibrated

    def output_path(self, model: Model, options: object, calibration: Dataset | None, workdir: Path) -> Path:
        """Return where quantize writes its result in workdir: named by the format, options
        and calibration samples, so one path never holds two different results."""
        used = calibration if self.uses_calibration(options) else None
        return workdir / f"{self.name}-{fingerprint((self.name, options, used))[:20]}"

    def quantize(self, model: Model, options: object, calibration: Dataset | None, workdir: Path,
                 progress: Progress | None = None) -> Path:
        """Write the quantized model for options to output_path() and return it; a format
        whose quantizing is long tells progress (steps done, steps). Raises
        FormatUnavailable when a tool is missing; the tools' own errors pass through."""
        raise NotImplementedError

    def evaluation_runner(self) -> Callable[[Path, Dataset], np.ndarray]:
        """Return the function giving an artifact's outputs on a data set, which the task
        metric compares with the full-precision reference."""
        return get_runtime(self.runtime).outputs

    def benchmark_runner(self):
        """Return the runtime that measures this format's artifacts: its name keys the
        group of models measured together, its benchmark(models, data, target, seconds)
        measures them."""
        return get_runtime(self.runtime)

    def sensitivity(self, model: Model, options: object, calibration: Dataset, evaluation: Dataset, score, workdir: Path,
                    progress=None):
        """For a format that scans_sensitivity: return its layer groups ranked by score(path),
        the metric drop with only that group quantized, telling progress (done, total) after
        each group. Raises NotImplementedError otherwise."""
        raise NotImplementedError(f"{self.name} does not scan sensitivity")

    def exclusion_steps(self, best: object, scores: tuple) -> tuple[Step, ...]:
        """For a format that scans_sensitivity: return the steps keeping the most sensitive
        groups in full precision. Raises NotImplementedError otherwise."""
        raise NotImplementedError(f"{self.name} does not scan sensitivity")

    def artifact_files(self, path: Path) -> tuple[Path, ...]:
        """Return the files that make up the artifact at path (a file, or a folder's files)."""
        return tuple(sorted(f for f in path.rglob("*") if f.is_file())) if path.is_dir() else (path,)

    def register(self, path: Path, name: str, logged_uri: str) -> str:
        """Register the artifact at path (already logged to the active MLflow run at
        logged_uri) as a new version of registered model name; return the version."""
        import mlflow

        from quantmill.tracking.registry import register_folder

        # No MLflow flavor loads this format: the version points at the logged folder.
        return register_folder(name, logged_uri, mlflow.active_run().info.run_id)



class AsGiven(Format):
    """The model as it came, in full precision: a baseline, never a candidate; its
    artifact is the model's own file or folder."""

    candidate = False

    def output_path(self, model: Model, options: object, calibration: Dataset | None, workdir: Path) -> Path:
        """Return the model's own path."""
        return model.path

    def quantize(self, model: Model, options: object, calibration: Dataset | None, workdir: Path,
                 progress: Progress | None = None) -> Path:
        """Return the model's own path."""
        return model.path
