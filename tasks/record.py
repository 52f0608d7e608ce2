"""Record the run: report.json, an MLflow run, registration of a passing model, and Prefect
artifacts summarising it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from quantmill.benchmark_table import RUN_ROWS_FILE, append_rows, run_rows
from quantmill.data import Dataset, save_samples
from quantmill.exporters.artifact import verify_artifact
from quantmill.formats import get_format
from quantmill.gate import PASSED
from quantmill.report import render_summary, write_report
from quantmill.report_html import write_html
from quantmill.storage import s3_from_env, upload_artifact
from quantmill.tracking.runs import CALIBRATION_SAMPLE, record_run
from tasks.policy import EPHEMERAL, retried


@task(name="record", timeout_seconds=900, **retried(), **EPHEMERAL)
def record_task(
    report: dict, out_dir: Path, register: bool, alias: str, calibration_sample: Dataset | None = None,
    latest_dir: Path | None = None,
) -> dict:
    """Check the chosen artifact against the sha256 in the report, upload it to S3 when
    QUANTMILL_S3_BUCKET is set, write out_dir/report.json, log the MLflow run, and register
    the chosen artifact when the gate passed and register is set; the calibration samples go
    with the run for the recalibration sweep. The final report is also written whole to
    latest_dir/report.json (the last run to finish there wins). Returns the report with its
    `storage` and `mlflow` sections filled in."""
    gate = report["gate"]
    chosen = next((a for a in report["attempts"] if a["index"] == gate["chosen_attempt"]), None)
    if chosen is not None:
        verify_artifact(Path(chosen["path"]), chosen["sha256"])
    location = s3_from_env()
    if location is not None and chosen is not None:
        model = report["model"]
        # Keyed by flow run as well: two runs of one version never overwrite each other's upload.
        name = f"{model['name']}/{model['version'] or model['sha256'][:12]}/{chosen['format']}/{flow_run.id or 'local'}"
        report = {**report, "storage": {"s3_uri": upload_artifact(Path(chosen["path"]).parent, location, name)}}
    report_path = write_report(report, out_dir)
    html_path = write_html(report, out_dir)
    ship = register and gate["status"] == PASSED and chosen is not None
    with tempfile.TemporaryDirectory(prefix="quantmill-record-") as scratch:
        rows = Path(scratch) / RUN_ROWS_FILE
        append_rows(rows, run_rows(report))
        sample = None if calibration_sample is None else save_samples(
            calibration_sample, Path(scratch) / Path(CALIBRATION_SAMPLE).name
        )
        registration = record_run(
            report, report_path,
            artifact_dir=Path(chosen["path"]).parent if chosen else None,
            register_as=f"{report['model']['name']}-quantized" if ship else None,
            alias=alias if ship else None, calibration_sample=sample,
            register=None if chosen is None else (
                lambda name, uri: get_format(chosen["format"]).register(Path(chosen["path"]), name, uri)
            ),
            # A retry of this task within the same flow run resumes the run and finds the version.
            key=str(flow_run.id) if flow_run.id else None, report_files=(html_path, rows),
        )
    final = {**report, "mlflow": {
        "run_id": registration.run_id, "registered_model": registration.registered_model,
        "version": registration.version, "alias": registration.alias,
    }}
    write_report(final, out_dir)
    if latest_dir is not None:
        write_report(final, latest_dir)
        write_html(final, latest_dir)
    _publish_prefect_artifacts(final, html_path)
    return final


def _publish_prefect_artifacts(report: dict, html_path: Path) -> None:
    key = "quantmill-" + "".join(c if c.isalnum() else "-" for c in report["model"]["name"].lower())
    create_markdown_artifact(
        key=key, description=f"quantmill gate: {report['gate']['status']}",
        markdown="```\n" + render_summary(report) + "\n```\n\n"
                 f"report.html (Pareto plot, calibration check, per-class results): `{html_path}`, and "
                 f"`report.html` among the artifacts of MLflow run `{report['mlflow']['run_id']}`",
    )
    create_table_artifact(
        key=f"{key}-attempts",
        table=[
            {
                "attempt": a["index"], "format": a["description"], "metric": a["metric_name"],
                "quantized_metric": round(a["quantized_metric"], 3), "accuracy_drop": round(a["accuracy_drop"], 3),
                "size_bytes": a["size_bytes"],
                "speedup_vs_baseline": None if a["speedup_vs_baseline"] is None else round(a["speedup_vs_baseline"], 3),
            }
            for a in report["attempts"]
        ],
        description="every quantization attempt, measured against full precision",
    )
