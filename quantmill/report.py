"""report.json and the summary table printed after a run. The README documents every field."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from quantmill import __version__
from quantmill.atomic import atomic_file
from quantmill.attempts import Attempt
from quantmill.benchmark import TargetBenchmarks
from quantmill.calibration import CalibrationVerdict
from quantmill.data import Dataset
from quantmill.formats import Candidate
from quantmill.gate import GateDecision, SearchChoice
from quantmill.hardware import Hardware
from quantmill.metrics import Budget, Evaluation
from quantmill.models import Model
from quantmill.sensitivity import GroupScore
from quantmill.speed import LATENCY, THROUGHPUT, compare

REPORT_FILE = "report.json"


def family_of(model: dict) -> str:
    """Return the model's family, with its architecture where it has one."""
    return f"{model['family']} ({model['architecture']})" if model.get("architecture") else model["family"]


def model_section(model: Model) -> dict:
    """Return the report's `model` section."""
    return {
        "uri": model.uri, "name": model.name, "version": model.version, "sha256": model.sha256,
        "source_format": model.kind, "path": str(model.path),
        "family": model.family, "parameters": model.parameters, "size_bytes": model.size_bytes,
        "op_counts": model.op_counts, "architecture": model.architecture, "reference": model.reference,
    }


def build_report(
    *, model: Model, task: str, target: str, budget: Budget,
    hardware: Hardware, candidates: tuple[Candidate, ...], calibration: CalibrationVerdict,
    calibration_data: Dataset, evaluation_data: Dataset, baseline_format: str, baseline: object | None,
    attempts: tuple[Attempt, ...], sensitivity: tuple[GroupScore, ...], gate: GateDecision,
    failures: tuple[dict, ...] = (), targets: tuple[TargetBenchmarks, ...] = (), objective: str = THROUGHPUT,
    search: SearchChoice | None = None,
) -> dict:
    """Return the report as a JSON-ready dict."""
    baseline_of = {str(a.index): a.baseline_format for a in attempts}
    return {
        "quantmill_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": task,
        "target": target,
        "objective": objective,
        "max_accuracy_drop": budget.value,
        "budget": asdict(budget),
        "hardware": {**asdict(hardware), "description": hardware.describe(), "identity": hardware.identity()},
        "model": model_section(model),
        "candidates": [asdict(c) for c in candidates],
        "calibration": {"path": str(calibration_data.path), **asdict(calibration)},
        "evaluation_data": {
            "path": str(evaluation_data.path), "sha256": evaluation_data.sha256, "samples": len(evaluation_data),
        },
        "baseline": {
            "format": baseline_format, "benchmark": None if baseline is None else asdict(baseline),
            "headline": None if baseline is None else baseline.headline()[1],
            "headline_value": None if baseline is None else baseline.headline()[0],
        },
        "baselines": {a.baseline_format: asdict(a.baseline) for a in attempts if a.baseline is not None},
        "attempts": [_attempt(a, budget) for a in attempts],
        "failures": list(failures),
        "targets": [_target(t, baseline_of) for t in targets],
        "sensitivity": [asdict(s) for s in sensitivity],
        "search": None if search is None else {
            "chosen_attempt": search.index, "objective": search.objective, "why": search.why,
            "goal": search.goal, "goal_met": search.goal_met,
            "ranking": [{"index": i, "format": f, "figure": v} for i, f, v in search.ranking],
        },
        "gate": asdict(gate),
        "mlflow": None,
    }


def _target(result: TargetBenchmarks, baseline_of: dict[str, str]) -> dict:
    compared = {label: (bench, result.benchmarks.get(baseline_of[label]))
                for label, bench in result.benchmarks.items() if label in baseline_of}
    return {
        "target": result.target, "status": "measured" if result.measured else "not benchmarked",
        "reason": result.reason, "flow_run": result.flow_run,
        "hardware": None if result.hardware is None else result.hardware.describe(),
        "machine": None if result.hardware is None else result.hardware.identity(),
        "benchmarks": {label: asdict(b) for label, b in result.benchmarks.items()},
        "speedup_vs_baseline": {
            label: bench.headline()[0] / base.headline()[0] for label, (bench, base) in compared.items() if base is not None
        },
        "throughput_ratio_vs_fp32": {
            label: _throughput_ratios(bench, base) for label, (bench, base) in compared.items() if base is not None
        },
    }


def _throughput_ratios(bench: object, baseline: object) -> dict[str, float] | None:
    # Per batch size where the runtime measures batches (ONNX Runtime); None otherwise.
    per_batch, base = getattr(bench, "throughput", None), getattr(baseline, "throughput", None)
    if not isinstance(per_batch, dict) or not isinstance(base, dict):
        return None
    return {b: per_batch[b] / base[b] for b in per_batch}


def _speed(bench, baseline, objective: str) -> dict:
    (rounds, figure), (base_rounds, _) = bench.speed_rounds(objective), baseline.speed_rounds(objective)
    ratio = compare(rounds, base_rounds)
    return {"figure": figure, "ratio": _finite(ratio.ratio), "ci": [_finite(ratio.low), _finite(ratio.high)],
            "verdict": ratio.verdict, "rounds": ratio.rounds}


def _interval(evaluation: Evaluation) -> list[float] | None:
    return None if evaluation.interval is None else [round(v, 4) for v in evaluation.interval]


def _attempt(attempt: Attempt, budget: Budget) -> dict:
    ev, bench, baseline = attempt.evaluation, attempt.benchmark, attempt.baseline
    speedup = per_batch = speed = None
    if bench is not None and baseline is not None:
        speedup = bench.headline()[0] / baseline.headline()[0]
        per_batch = _throughput_ratios(bench, baseline)
        speed = compare(bench.headline_rounds(), baseline.headline_rounds())
    description = attempt.options.describe()
    return {
        "index": attempt.index,
        "format": attempt.format,
        "description": f"{attempt.format} {description}".strip(),
        "options": asdict(attempt.options),
        "reason": attempt.reason,
        "path": str(attempt.artifact.path),
        "sha256": attempt.artifact.sha256,
        "size_bytes": attempt.artifact.size_bytes,
        "metric_name": ev.metric_name,
        "baseline_metric": ev.baseline_metric,
        "quantized_metric": ev.quantized_metric,
        "accuracy_drop": ev.accuracy_drop,
        "drop_interval": _interval(ev),
        "samples": ev.samples,
        "within_budget": budget.meets(ev),
        "confirmation": None if ev.confirmed is None else {
            "baseline_metric": ev.confirmed.baseline_metric, "quantized_metric": ev.confirmed.quantized_metric,
            "accuracy_drop": ev.confirmed.accuracy_drop, "drop_interval": _interval(ev.confirmed),
            "samples": ev.confirmed.samples, "within_budget": budget.meets(ev.confirmed),
            "secondary_metrics": ev.confirmed.secondary,
        },
        "secondary_metrics": ev.secondary,
        "per_slice": ev.per_slice,
        "worst_disagreements": list(ev.worst),
        "benchmark": None if bench is None else asdict(bench),
        "headline_value": None if bench is None else bench.headline()[0],
        "baseline_format": attempt.baseline_format,
        "speedup_vs_baseline": speedup,
        "speedup_ci": None if speed is None else [_finite(speed.low), _finite(speed.high)],
        "speed_verdict": None if speed is None else speed.verdict,
        "speed": None if bench is None or baseline is None else {
            objective: _speed(bench, baseline, objective) for objective in (THROUGHPUT, LATENCY)
        },
        "throughput_ratio_vs_fp32": per_batch,
        "size_ratio_vs_fp32": None if baseline is None else attempt.artifact.size_bytes / baseline.size_bytes,
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def write_report(report: dict, out_dir: Path) -> Path:
    """Write report as out_dir/report.json atomically and return its path."""
    path = out_dir / REPORT_FILE
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def render_summary(report: dict) -> str:
    """Return a plain-text summary: model, calibration verdict, one row per attempt, gate."""
    model, cal, gate = report["model"], report["calibration"], report["gate"]
    lines = [
        f"model     {model['name']} v{model['version'] or '-'}  {family_of(model)}, {model['parameters']:,} params, "
        f"sha256 {model['sha256'][:12]}",
        f"reference {model.get('reference') or 'not stated'}",
        f"hardware  {report['hardware']['description']}",
        f"calib     {cal['status']}: {cal['n_samples']} samples, KS D={cal['ks_statistic']:.3f} "
        f"p={cal['ks_pvalue']:.3g} ({cal['features_drifted']}/{cal['features_tested']} drifted), "
        f"{cal['in_range_fraction']:.2%} of eval values in range",
    ]
    baseline = report["baseline"]["benchmark"]
    header = (f"{'#':>2}  {'attempt':<56} {'metric':>9} {'drop':>7} {'size MB':>8} {'speed':>9} {'x base':>7} "
              f"{'95% CI':>11}")
    lines += ["", header, "-" * len(header)]
    if baseline is not None:
        first = report["attempts"][0] if report["attempts"] else None
        metric = f"{first['baseline_metric']:.2f}" if first else "-"
        lines.append(
            f"{'-':>2}  {report['baseline']['format'] + ' (baseline)':<56} {metric:>9} {'':>7} "
            f"{baseline['size_bytes'] / 1e6:>8.2f} {report['baseline']['headline_value']:>9.1f} {'1.00':>7}"
        )
    for a in report["attempts"]:
        speed = f"{a['headline_value']:.1f}" if a["headline_value"] is not None else "-"
        # The ratio the interval beside it belongs to (and the gate judges): the paired rounds'
        # geometric mean, not the ratio of medians (speedup_vs_baseline), which can differ.
        paired = (a.get("speed") or {}).get(THROUGHPUT, {}).get("ratio")
        ratio = f"{paired:.2f}" if paired else "-"
        ci = a.get("speedup_ci") or [None, None]
        interval = f"{ci[0]:.2f}-{ci[1]:.2f}" if None not in ci else "-"
        mark = "*" if a["index"] == gate["chosen_attempt"] else " "
        lines.append(
            f"{a['index']:>2}{mark} {a['description'][:56]:<56} {a['quantized_metric']:>9.2f} {a['accuracy_drop']:>7.2f} "
            f"{a['size_bytes'] / 1e6:>8.2f} {speed:>9} {ratio:>7} {interval:>11}"
        )
    for failure in report.get("failures", []):
        lines.append(f"{'x':>2}  {failure['format']:<56} failed: {failure['reason'][:80]}")
    # A language model's token-level figures (a classifier's KL has no interval or Δp).
    with_kld = [a for a in report["attempts"] if "mean_kl_ci_low" in a["secondary_metrics"]]
    if with_kld:
        lines += ["", f"{'#':>2}  {'KLD mean':>9} {'95% CI':>19} {'KLD p99':>9} {'RMS dp %':>9} {'same top %':>10}"]
        for a in with_kld:
            m = a["secondary_metrics"]
            lines.append(f"{a['index']:>2}  {m['mean_kl']:>9.5f} {m['mean_kl_ci_low']:>9.5f}-{m['mean_kl_ci_high']:<9.5f} "
                         f"{m['p99_kl']:>9.5f} {m['rms_delta_p']:>9.2f} {m['top1_agreement']:>10.2f}")
    if report["attempts"]:
        lines.append(
            f"metric: {report['attempts'][0]['metric_name']}; drop in {report['budget']['unit']}; "
            f"speed: {report['baseline']['headline']}; * = chosen"
        )
    for t in report.get("targets", []):
        chosen = t["speedup_vs_baseline"].get(str(gate["chosen_attempt"]))
        detail = (f"{t['hardware']}" + (f"; chosen attempt {chosen:.2f}x the baseline" if chosen else "")
                  if t["status"] == "measured" else f"not benchmarked: {t['reason']}")
        lines.append(f"target    {t['target']}: {detail}")
    if report.get("search"):
        lines.append(f"search    chose #{report['search']['chosen_attempt']}: {report['search']['why']}; measured again for the gate")
    lines += ["", f"gate      {gate['status'].upper()}"] + [f"          - {r}" for r in gate["reasons"]]
    if report.get("mlflow"):
        m = report["mlflow"]
        lines.append(f"mlflow    run {m['run_id']}" + (f", registered {m['registered_model']} v{m['version']} @{m['alias']}" if m.get("version") else ""))
    return "\n".join(lines)

