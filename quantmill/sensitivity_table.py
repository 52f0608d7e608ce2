"""`quantmill sensitivity`: the layerwise sensitivity scan that the escalation ladder runs
after a missed budget, run on its own for one model and one format, as a table (printed,
and saved as CSV and JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from quantmill.atomic import atomic_file
from quantmill.calibration import stratified_subsample
from quantmill.errors import QuantmillError
from quantmill.formats import get_format, offered
from quantmill.formats.base import Format
from quantmill.hardware import local_cpu
from quantmill.metrics import get_metric
from quantmill.models import Model, get_kind
from quantmill.progress import terminal_line
from quantmill.runtimes import get_runtime
from quantmill.sensitivity import GroupScore
from quantmill.targets import HOST


@dataclass(frozen=True)
class SensitivityTable:
    """One scan: the model and format it quantized, the metric and the unit of its drops,
    the samples scored (the evaluation's choosing half), the drop with every group
    quantized, and the groups from the most to the least sensitive, each with the drop
    when only that group is quantized."""

    model: str
    format: str
    options: str
    metric: str
    unit: str
    samples: int
    full_drop: float
    groups: tuple[GroupScore, ...]

    def frame(self) -> pd.DataFrame:
        """Return one row per group: rank, group, node count, drop, and the nodes."""
        return pd.DataFrame({
            "rank": range(1, len(self.groups) + 1),
            "group": [g.group for g in self.groups],
            "nodes": [len(g.nodes) for g in self.groups],
            "drop": [g.accuracy_drop for g in self.groups],
            "node_names": [" ".join(g.nodes) for g in self.groups],
        })

    def render(self) -> str:
        """Return the table as text, with a heading naming the scan."""
        heading = (f"{self.model}: {self.format} {self.options}".rstrip() + f"; {self.metric} drop in {self.unit} "
                   f"on {self.samples} samples; every group quantized: {self.full_drop:.2f}")
        return heading + "\n" + self.frame().drop(columns="node_names").to_string(index=False, float_format="{:.3f}".format)

    def save(self, out_dir: Path) -> tuple[Path, Path]:
        """Write sensitivity.csv and sensitivity.json into out_dir (each whole or not at all);
        return their paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        csv, js = out_dir / "sensitivity.csv", out_dir / "sensitivity.json"
        with atomic_file(csv) as tmp:
            self.frame().to_csv(tmp, index=False)
        with atomic_file(js) as tmp:
            heading = {k: v for k, v in self.__dict__.items() if k != "groups"}
            groups = [{"group": g.group, "nodes": list(g.nodes), "drop": g.accuracy_drop} for g in self.groups]
            tmp.write_text(json.dumps({**heading, "groups": groups}, indent=2))
        return csv, js


def scanning_format(model: Model, format_name: str | None) -> Format:
    """Return the format named format_name, or the first CPU candidate for model's kind that
    scans sensitivity. Raises QuantmillError when it does not apply to the model's kind or
    has no sensitivity scan."""
    if format_name is None:
        found = [f for f in offered(model.kind, HOST) if f.scans_sensitivity]
        if not found:
            raise QuantmillError(f"no format for {model.kind} models scans layer sensitivity")
        return found[0]
    fmt = get_format(format_name)
    if model.kind not in fmt.kinds or not fmt.scans_sensitivity:
        scanning = [f.name for f in offered(model.kind, HOST) if f.scans_sensitivity]
        raise QuantmillError(f"{format_name} has no sensitivity scan for {model.kind} models; "
                             f"formats that do: {', '.join(scanning) or 'none'}")
    return fmt


def scan_model(model: Model, task: str, calibration_path: Path, evaluation_path: Path, fmt: Format,
               workdir: Path) -> SensitivityTable:
    """Quantize model with fmt's default options for this CPU, then each layer group alone,
    scoring each on the evaluation's choosing half as the ladder does; return the table.

    Raises InputError naming the file for data the model or the task's metric cannot take.
    """
    kind, metric = get_kind(model.kind), get_metric(task)
    calibration = kind.load_data(model, calibration_path)
    evaluation = kind.load_data(model, evaluation_path)
    metric.check(evaluation, kind.classes(model))
    calibration = stratified_subsample(calibration, kind.policy.max_samples, kind.policy.seed)
    options = fmt.default_options(local_cpu(fmt.runtime))
    reference = get_runtime(kind.reference_runtime).outputs(model.path, evaluation)
    outputs = fmt.evaluation_runner()

    def score(path: Path) -> float:
        return metric.evaluate_model(reference, outputs, path, evaluation).accuracy_drop

    full = metric.evaluate_model(reference, outputs, fmt.quantize(model, options, calibration, workdir), evaluation)
    groups = fmt.sensitivity(model, options, calibration, evaluation, score, workdir,
                             terminal_line(f"{fmt.name}: layer groups scored"))
    return SensitivityTable(model.uri, fmt.name, options.describe(), full.metric_name, metric.unit, full.samples,
                            full.accuracy_drop, groups)
