"""Recording one quantization run in MLflow: its parameters, metrics, report and samples,
and registering the artifact that passed its gate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quantmill.tracking.client import EXPERIMENT, client
from quantmill.tracking.registry import check_alias

CALIBRATION_SAMPLE = "calibration/calibration_sample.npz"
CHOSEN_ARTIFACT = "chosen_artifact"
# The tag naming what a run records (the calling flow run), so that recording is exactly once.
RECORD_KEY = "quantmill.record_key"


@dataclass(frozen=True)
class Registration:
    """A recorded run, and the registered quantized model: name, version and alias."""

    run_id: str
    registered_model: str | None
    version: str | None
    alias: str | None


# Given the registered model's name and the URI of the logged chosen_artifact folder, log and
# register the artifact inside the active run and return the new version (a format's hook).
Register = Callable[[str, str], str]


def record_run(
    report: dict, report_path: Path, artifact_dir: Path | None, register_as: str | None, alias: str | None,
    register: Register | None = None, calibration_sample: Path | None = None, key: str | None = None,
    report_files: tuple[Path, ...] = (),
) -> Registration:
    """Log report's params, metrics and files (report_path, and report_files beside it, such
    as report.html) as one MLflow run, with the calibration
    samples used (CALIBRATION_SAMPLE, which the recalibration sweep compares fresh data
    with); when register_as is given, register the artifact in artifact_dir as a new version
    of that model through register, with tags and the alias. Returns what was recorded.

    Exactly once per key (the calling flow run's id): a second call with the same key, a
    retry after a failure part-way, resumes the run that call started and finds the version
    it registered instead of registering another. MLflow's errors pass through; an alias
    MLflow would refuse raises QuantmillError before anything is logged."""
    import mlflow

    if alias:
        check_alias(alias)
    registry = client()
    model = report["model"]
    budget = report["budget"]
    earlier = _run_with_key(key)
    started = (mlflow.start_run(run_id=earlier) if earlier
               else mlflow.start_run(run_name=f"{model['name']}-v{model['version'] or 'file'}",
                                     tags={RECORD_KEY: key} if key else None))
    with started as run:
        mlflow.log_params(_params(report))
        mlflow.log_metrics(_metrics(report))
        mlflow.set_tags({
            "quantmill.gate": report["gate"]["status"], "quantmill.source_sha256": model["sha256"],
            "quantmill.source_model": model["name"], "quantmill.source_version": str(model["version"]),
            "quantmill.budget": f"{budget['value']:g} {budget['unit']}",
            # A failed attempt (a crashed worker among them) is part of the evidence.
            **{f"quantmill.failed_attempt.{f['index']}": f"{f['format']}: {f['reason']}"[:1000]
               for f in report.get("failures", [])},
        })
        for path in (report_path, *report_files):
            mlflow.log_artifact(str(path))
        if calibration_sample is not None:
            mlflow.log_artifact(str(calibration_sample), artifact_path=str(Path(CALIBRATION_SAMPLE).parent))
        if artifact_dir is not None:
            mlflow.log_artifacts(str(artifact_dir), artifact_path=CHOSEN_ARTIFACT)
        if register_as is None or register is None:
            return Registration(run.info.run_id, None, None, None)
        chosen = next(a for a in report["attempts"] if a["index"] == report["gate"]["chosen_attempt"])
        version = _version_of_run(register_as, run.info.run_id) or register(register_as, mlflow.get_artifact_uri(CHOSEN_ARTIFACT))
    for key, value in {
        "source_model": model["name"], "source_version": str(model["version"]), "source_sha256": model["sha256"],
        "task": report["task"], "format": chosen["format"], "gate_status": report["gate"]["status"],
        "accuracy_drop": f"{_confirmed(chosen)['accuracy_drop']:.4f}", "budget_unit": budget["unit"],
        "artifact_sha256": chosen["sha256"],
    }.items():
        registry.set_model_version_tag(register_as, version, key, value)
    if alias:
        registry.set_registered_model_alias(register_as, alias, version)
    return Registration(run.info.run_id, register_as, version, alias)


def _run_with_key(key: str | None) -> str | None:
    if key is None:
        return None
    registry = client()
    experiment = registry.get_experiment_by_name(EXPERIMENT).experiment_id
    found = registry.search_runs([experiment], filter_string=f"tags.`{RECORD_KEY}` = '{key}'", max_results=1)
    return found[0].info.run_id if found else None


def _version_of_run(name: str, run_id: str) -> str | None:
    versions = [v for v in client().search_model_versions(f"run_id = '{run_id}'") if v.name == name]
    return str(versions[0].version) if versions else None


def _params(report: dict) -> dict[str, str]:
    cal = report["calibration"]
    return {
        "model_uri": report["model"]["uri"], "model_sha256": report["model"]["sha256"],
        "model_kind": report["model"]["source_format"],
        "family": report["model"]["family"], "task": report["task"], "target": report["target"],
        "budget": str(report["budget"]["value"]), "budget_unit": report["budget"]["unit"],
        "hardware": report["hardware"]["description"][:500],
        "calibration_sha256": cal["data_sha256"], "evaluation_sha256": report["evaluation_data"]["sha256"],
        "candidates": ",".join(c["format"] for c in report["candidates"]),
    }


def _metrics(report: dict) -> dict[str, float]:
    cal = report["calibration"]
    metrics = {
        "calibration.ks_statistic": cal["ks_statistic"], "calibration.ks_pvalue": cal["ks_pvalue"],
        "calibration.in_range_fraction": cal["in_range_fraction"],
    }
    metrics |= _numbers("baseline", report["baseline"]["benchmark"] or {})
    for a in report["attempts"]:
        prefix = f"attempt{a['index']}"
        metrics |= {f"{prefix}.quantized_metric": a["quantized_metric"], f"{prefix}.accuracy_drop": a["accuracy_drop"],
                    f"{prefix}.confirmed_accuracy_drop": _confirmed(a)["accuracy_drop"], f"{prefix}.size_bytes": a["size_bytes"]}
        metrics |= _numbers(prefix, a["benchmark"] or {})
    return metrics


def _confirmed(attempt: dict) -> dict:
    """The attempt's drop as confirmed on the held-back half (as chosen, for a report without one)."""
    return attempt.get("confirmation") or attempt


def _numbers(prefix: str, values: dict) -> dict[str, float]:
    found = {}
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            found |= _numbers(name, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[name] = float(value)
    return found


def logged_rows(scratch: Path) -> tuple:
    """Return every benchmark row logged by a quantmill run in MLflow (RUN_ROWS_FILE of each
    run that has one), downloading them under scratch. Raises InputError for a malformed file."""
    from quantmill.benchmark_table import RUN_ROWS_FILE, load_table

    registry = client()
    experiment = registry.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return ()
    rows = []
    for run in registry.search_runs([experiment.experiment_id], max_results=5000):
        if any(f.path == RUN_ROWS_FILE for f in registry.list_artifacts(run.info.run_id)):
            folder = scratch / run.info.run_id
            registry.download_artifacts(run.info.run_id, RUN_ROWS_FILE, str(folder))
            rows += load_table(folder)
    return tuple(rows)
