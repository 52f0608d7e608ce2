"""The recalibration-sweep flow: monthly, every model version carrying the production alias
is checked for calibration drift against a fresh sample of recent data, and a drifted one
is re-quantized with the fresh data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.quantize_model import quantize_model
from quantmill.state import output_dir, quantmill_home
from quantmill.sweep import RECENT_DATA_TAG, SweepEntry, render_sweep, source_model_uri, write_sweep_report
from tasks.sweep import aliased_versions_task, drift_task, quantization_record_task, split_task


@flow(name="recalibration-sweep", persist_result=True, result_serializer="json")
def recalibration_sweep(
    alias: str = "production", recent_data: dict[str, str] | None = None, alpha: float = 0.01,
    out_dir: str = "sweep", benchmark_on: list[str] | None = None, benchmark_seconds: float = 1.0,
) -> dict:
    """Return the sweep report (also out_dir/sweep-report.json): per version @alias, the KS
    drift (on the model kind's per-sample features) of the fresh data — recent_data[registered model name], else the version's tag
    quantmill.recent_data — from the calibration samples logged by the run that made it.

    A drifted version's source model is re-quantized by quantize-model with the fresh data,
    split in two for calibration and evaluation, the same task, target and budget; a new
    passing version gets the target's alias. The production alias is left for a person to move.
    """
    logger = get_run_logger()
    out = output_dir(out_dir)
    entries = []
    for found in aliased_versions_task(alias):
        fresh = (recent_data or {}).get(found.name) or found.tags.get(RECENT_DATA_TAG)
        entry = SweepEntry(found.name, found.version, None, fresh)
        if not fresh or not found.run_id:
            missing = "no recent data (parameter or tag quantmill.recent_data)" if not fresh else "no quantization run"
            entries.append(replace(entry, note=missing))
            logger.warning("%s v%s skipped: %s", found.name, found.version, missing)
            continue
        work = quantmill_home() / "sweep" / f"{found.name}-v{found.version}"
        record, stored = quantization_record_task(found.run_id, work)
        source_uri = source_model_uri(found.tags, record)
        entry = replace(entry, source_model=source_uri)
        if source_uri is None:
            entries.append(replace(entry, note="its source model is not a registered version"))
            logger.warning("%s v%s skipped: no registered source model", found.name, found.version)
            continue
        drift = drift_task(source_uri, record["task"], stored, Path(fresh), alpha, work)
        logger.info("%s v%s: %s", found.name, found.version, "drifted" if drift.drifted else "stable")
        if not drift.drifted:
            entries.append(replace(entry, drift=drift))
            continue
        calibration, evaluation = split_task(Path(fresh), work / "fresh", seed=0)
        report = quantize_model(
            model=source_uri, task=record["task"], calibration_data=str(calibration), eval_data=str(evaluation),
            target=record["target"], **{record["budget"]["parameter"]: record["budget"]["value"]},
            out_dir=str(out / f"{found.name}-v{found.version}"), benchmark_on=benchmark_on,
            benchmark_seconds=benchmark_seconds,
        )
        entries.append(replace(
            entry, drift=drift, requantized=True, gate_status=report["gate"]["status"],
            new_version=(report.get("mlflow") or {}).get("version"),
            report=str(out / f"{found.name}-v{found.version}" / "report.json"),
        ))
    written = write_sweep_report(entries, alias, out)
    summary = render_sweep(entries, alias)
    logger.info("%s", summary)
    create_markdown_artifact(key="quantmill-recalibration-sweep", markdown="```\n" + summary + "\n```",
                             description="calibration drift of production versions")
    return written
