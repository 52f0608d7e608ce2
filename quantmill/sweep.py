"""The recalibration sweep's findings: for each model version in production, whether fresh
data drifted from the calibration samples it was quantized with, and what was done."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from quantmill.atomic import atomic_file
from quantmill.calibration import Drift

SWEEP_REPORT = "sweep-report.json"
RECENT_DATA_TAG = "quantmill.recent_data"


@dataclass(frozen=True)
class SweepEntry:
    """One production version: its drift (None when it could not be measured), the
    re-quantization's gate status and new registered version when it drifted, and why
    anything was skipped."""

    name: str
    version: str
    source_model: str | None
    recent_data: str | None
    drift: Drift | None = None
    requantized: bool = False
    gate_status: str | None = None
    new_version: str | None = None
    report: str | None = None
    note: str | None = None


def source_model_uri(tags: dict[str, str], report: dict) -> str | None:
    """Return models:/NAME/VERSION of the model a quantized version was made from: its tags
    source_model and source_version (set when quantmill registers it), else the report of
    the run that made it (a version a person registered from that run after review).
    None when the source was not a registered version."""
    name, version = tags.get("source_model"), tags.get("source_version")
    if not (name and version and version != "None"):
        name, version = report["model"]["name"], report["model"]["version"]
    return f"models:/{name}/{version}" if name and version else None


def write_sweep_report(entries: list[SweepEntry], alias: str, out_dir: Path) -> dict:
    """Write out_dir/sweep-report.json atomically and return what it holds."""
    path = out_dir / SWEEP_REPORT
    body = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "alias": alias,
        "versions": [asdict(e) for e in entries],
        "drifted": [f"{e.name} v{e.version}" for e in entries if e.drift and e.drift.drifted],
    }
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(body, indent=2) + "\n")
    return body


def render_sweep(entries: list[SweepEntry], alias: str) -> str:
    """Return a plain-text table: one line per version with its drift and what was done."""
    lines = [f"recalibration sweep over versions @{alias}: {len(entries)} found"]
    for e in entries:
        if e.drift is None:
            lines.append(f"- {e.name} v{e.version}: not measured ({e.note})")
            continue
        d = e.drift
        state = "DRIFTED" if d.drifted else "stable"
        line = (f"- {e.name} v{e.version}: {state}, {d.features_drifted}/{d.features_tested} features "
                f"(worst {d.worst_feature} D={d.ks_statistic:.3f}, p={d.ks_pvalue:.2g}, threshold {d.threshold:.2g}); "
                f"{d.fresh_samples} fresh vs {d.stored_samples} stored samples")
        if e.requantized:
            line += f"; re-quantized: gate {e.gate_status}" + (f", new version {e.new_version}" if e.new_version else "")
        lines.append(line)
    return "\n".join(lines)
