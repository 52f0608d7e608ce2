"""report.html: one self-contained page per run, beside report.json and made from it alone.
A Pareto plot of accuracy drop against speed and against size for every attempt on every
measured target (the chosen one marked), the calibration check, per-class results and the
worst disagreements of the chosen attempt, the sensitivity scan when it ran, and the gate's
reasons. Plots are matplotlib SVG inlined in the page, so it opens with no network.

Each plotted point is an SVG group with the id `point-<attempt>-<target>` (matplotlib's gid)
and its values are in the page's `quantmill-points` JSON, so a browser test can check what
was drawn against report.json."""

from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from quantmill.atomic import atomic_file
from quantmill.benchmark_table import measured_targets
from quantmill.report import family_of

HTML_FILE = "report.html"
_STATUS_COLOUR = {"passed": "#1a7f37", "failed": "#cf222e", "manual_review": "#9a6700"}


def plot_points(report: dict) -> list[dict]:
    """Return one point per attempt per measured target: attempt index, format description,
    target, accuracy drop (choosing half, with its interval), speed against the attempt's
    full-precision baseline on that target (None when not measured there) with its 95%
    interval where there is one, size in MB, and whether it is the chosen attempt.

    On the report's own target the speed is the paired ratio the gate judges (per-round
    ratios on the objective's figure, throughput for size), with its interval; on other
    targets, the ratio of medians."""
    chosen = report["gate"]["chosen_attempt"]
    judged = "latency" if report.get("objective") == "latency" else "throughput"
    paired = {str(a["index"]): (a.get("speed") or {}).get(judged) for a in report["attempts"]}
    speeds = {t["target"]: t["speedup_vs_baseline"] for t in measured_targets(report)}
    points = []
    for target, per_attempt in speeds.items():
        for a in report["attempts"]:
            label = str(a["index"])
            own = paired[label] if target == report["target"] and paired[label] else None
            points.append({
                "attempt": a["index"], "description": a["description"], "target": target,
                "drop": a["accuracy_drop"], "drop_interval": a["drop_interval"],
                "speedup": own["ratio"] if own else per_attempt.get(label),
                "speedup_interval": own["ci"] if own else None,
                "size_mb": a["size_bytes"] / 1e6, "chosen": a["index"] == chosen,
            })
    return points


def pareto_front(points: list[dict]) -> list[dict]:
    """Return the points of one target no other point beats on both lower drop and higher
    speed, in order of speed."""
    timed = [p for p in points if p["speedup"] is not None]
    front = [p for p in timed if not any(
        q["drop"] <= p["drop"] and q["speedup"] >= p["speedup"] and (q["drop"], q["speedup"]) != (p["drop"], p["speedup"])
        for q in timed)]
    return sorted(front, key=lambda p: p["speedup"])


def render_html(report: dict) -> str:
    """Return report.html for report (a report.json dict) as one self-contained page."""
    points = plot_points(report)
    model, gate, budget = report["model"], report["gate"], report["budget"]
    chosen = next((a for a in report["attempts"] if a["index"] == gate["chosen_attempt"]), None)
    title = f"quantmill: {model['name']} v{model['version'] or '-'}"
    sections = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='gate' style='color:{_STATUS_COLOUR.get(gate['status'], '#000')}'>gate: {_e(gate['status'].upper())}</p>",
        "<ul>" + "".join(f"<li>{_e(r)}</li>" for r in gate["reasons"]) + "</ul>",
        (f"<p>search: chose attempt {report['search']['chosen_attempt']}, {_e(report['search']['why'])}; "
         "measured again for the gate.</p>" if report.get("search") else ""),
        f"<p>{_e(family_of(model))}, {model['parameters']:,} parameters, sha256 {_e(model['sha256'][:12])}; "
        f"reference: {_e(model.get('reference') or 'not stated')}; "
        f"task {_e(report['task'])}; budget {budget['value']:g} {_e(budget['unit'])}"
        + (f" and mean KLD {budget['max_kld']:g}" if budget.get("max_kld") is not None else "")
        + f"; objective {_e(report['objective'])}; hardware {_e(report['hardware']['description'])}</p>",
        "<h2>Accuracy against speed and size</h2>",
        "<p>Every attempt on every measured target. Drop on the choosing half with its 95% interval; "
        "speed against full precision on the same runtime and target: on the run's own target the paired "
        "ratio the gate judges, with its 95% interval, elsewhere the ratio of medians. The line is each "
        "target's Pareto front, the dashed line the budget, the ringed point the one that would ship.</p>",
        _pareto_svg(points, budget, _baseline_mb(report)) if points else "<p>No attempt was made.</p>",
        _attempts_table(report),
        "<h2>Calibration data</h2>",
        _calibration(report["calibration"]),
    ]
    if chosen is not None:
        sections += ["<h2>The chosen attempt</h2>", _chosen(chosen)]
    if report.get("sensitivity"):
        sections += ["<h2>Layerwise sensitivity</h2>", _sensitivity(report["sensitivity"], budget["unit"])]
    data = json.dumps(points).replace("</", "<\\/")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(sections)
        + f"<script type='application/json' id='quantmill-points'>{data}</script></body></html>"
    )


def write_html(report: dict, out_dir: Path) -> Path:
    """Write render_html(report) as out_dir/report.html (whole or not at all); return its path."""
    path = out_dir / HTML_FILE
    with atomic_file(path) as tmp:
        tmp.write_text(render_html(report), encoding="utf-8")
    return path


def _pareto_svg(points: list[dict], budget: dict, baseline_mb: float | None) -> str:
    figure = Figure(figsize=(11, 4.4))
    by_speed, by_size = figure.subplots(1, 2)
    targets = list(dict.fromkeys(p["target"] for p in points))
    colours = dict(zip(targets, ("#0969da", "#bf3989", "#1a7f37", "#9a6700")))
    for target in targets:
        mine = [p for p in points if p["target"] == target]
        timed = [p for p in mine if p["speedup"] is not None]
        for p in timed:
            low, high = p["drop_interval"] or (p["drop"], p["drop"])
            slow, fast = p["speedup_interval"] or (p["speedup"], p["speedup"])
            # An interval the rounds left unbounded is drawn to the axis' edge, not to infinity.
            slow, fast = (p["speedup"] if v is None or not math.isfinite(v) else v for v in (slow, fast))
            by_speed.errorbar(p["speedup"], p["drop"], yerr=[[p["drop"] - low], [high - p["drop"]]],
                              xerr=[[p["speedup"] - slow], [fast - p["speedup"]]], fmt="none",
                              ecolor=colours[target], alpha=0.4, linewidth=1)
            dot = by_speed.scatter(p["speedup"], p["drop"], s=140 if p["chosen"] else 40, color=colours[target],
                                   edgecolors="black" if p["chosen"] else "none", linewidths=2, zorder=3)
            dot.set_gid(f"point-{p['attempt']}-{target}")
            by_speed.annotate(str(p["attempt"]), (p["speedup"], p["drop"]), textcoords="offset points", xytext=(6, 4),
                              fontsize=8)
        front = pareto_front(mine)
        if len(front) > 1:
            by_speed.plot([p["speedup"] for p in front], [p["drop"] for p in front], color=colours[target], linewidth=1,
                          label=f"{target} Pareto front")
        by_speed.scatter([], [], color=colours[target], label=target)
    by_speed.scatter(1.0, 0.0, marker="s", s=50, color="#57606a", label="full precision", zorder=2)
    by_speed.axvline(1.0, color="grey", linewidth=0.8)
    for axes in (by_speed, by_size):
        axes.axhline(budget["value"], color="#cf222e", linestyle="--", linewidth=1)
        axes.set_ylabel(f"drop ({budget['unit']})")
        axes.grid(alpha=0.3)
    # Ratios: 0.5x and 2x are equally far from 1x.
    by_speed.set_xscale("log")
    by_speed.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    by_speed.set_xlabel("speed vs full precision (x, log scale)")
    by_speed.legend(fontsize=8, loc="best")
    seen = {}
    for p in points:
        seen.setdefault(p["attempt"], p)
    for p in seen.values():
        by_size.scatter(p["size_mb"], p["drop"], s=140 if p["chosen"] else 40, color="#57606a",
                        edgecolors="black" if p["chosen"] else "none", linewidths=2, zorder=3)
        by_size.annotate(str(p["attempt"]), (p["size_mb"], p["drop"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if baseline_mb is not None:
        by_size.scatter(baseline_mb, 0.0, marker="s", s=50, color="#57606a", zorder=2)
        by_size.annotate("full precision", (baseline_mb, 0.0), textcoords="offset points", xytext=(6, 4), fontsize=8)
    by_size.set_xlabel("artifact size (MB)")
    figure.tight_layout()
    return _svg(figure)


def _baseline_mb(report: dict) -> float | None:
    benchmark = report["baseline"]["benchmark"]
    return None if benchmark is None else benchmark["size_bytes"] / 1e6


def _calibration(cal: dict) -> str:
    rows = [
        ("verdict", cal["status"]), ("samples", f"{cal['n_samples']} ({cal['n_used']} used)"),
        ("KS test", f"{cal['features_drifted']} of {cal['features_tested']} features differ from the evaluation data "
                    f"(p below {cal.get('ks_threshold', float('nan')):.2g}, Bonferroni); worst {cal['worst_feature']} "
                    f"D = {cal['ks_statistic']:.3f}"),
        ("range coverage", f"{cal['in_range_fraction']:.2%} of evaluation input values inside the calibration range"),
    ] + [("reason", r) for r in cal["reasons"]]
    table = "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"
    features = cal.get("ks_features") or []
    if not features:
        return table
    features = sorted(features, key=lambda f: -f[1])
    figure = Figure(figsize=(11, 2.6))
    axes = figure.subplots()
    threshold = cal["ks_threshold"]
    axes.bar(range(len(features)), [f[1] for f in features],
             color=["#cf222e" if f[2] < threshold else "#0969da" for f in features])
    axes.set_ylabel("KS D")
    axes.set_xlabel(f"feature, by D (red: p < {threshold:.2g}, drifted)")
    if len(features) <= 40:
        axes.set_xticks(range(len(features)), [f[0] for f in features], rotation=90, fontsize=7)
    figure.tight_layout()
    return table + _svg(figure)


def _attempts_table(report: dict) -> str:
    head = ("<tr><th>#</th><th>attempt</th><th>reason</th><th>metric</th><th>drop (95% CI)</th><th>confirmed</th>"
            "<th>size MB</th><th>speed x</th><th>verdict</th></tr>")
    rows = []
    for a in report["attempts"]:
        low, high = a["drop_interval"] or (a["accuracy_drop"], a["accuracy_drop"])
        confirmed = a["confirmation"]["accuracy_drop"] if a.get("confirmation") else None
        speed = a.get("speedup_vs_baseline")
        mark = " class='chosen'" if a["index"] == report["gate"]["chosen_attempt"] else ""
        rows.append(
            f"<tr{mark}><td>{a['index']}</td><td>{_e(a['description'])}</td><td>{_e(a['reason'])}</td>"
            f"<td>{a['quantized_metric']:.3f}</td><td>{a['accuracy_drop']:.3f} ({low:.3f} to {high:.3f})</td>"
            f"<td>{'-' if confirmed is None else f'{confirmed:.3f}'}</td><td>{a['size_bytes'] / 1e6:.2f}</td>"
            f"<td>{'-' if speed is None else f'{speed:.2f}'}</td><td>{_e(a.get('speed_verdict') or '-')}</td></tr>"
        )
    failures = "".join(f"<tr class='failed'><td>x</td><td>{_e(f['description'])}</td><td colspan='7'>failed: {_e(f['reason'])}"
                       + (f"<details><summary>{_e(f.get('signal') or 'exit status ' + str(f.get('exit_status')))}: "
                          f"the worker's last stderr lines</summary><pre>{_e(f['stderr_tail'])}</pre></details>"
                          if f.get("stderr_tail") is not None else "") + "</td></tr>"
                       for f in report.get("failures", []))
    return f"<table>{head}{''.join(rows)}{failures}</table>"


def _chosen(attempt: dict) -> str:
    parts = [f"<p>{_e(attempt['description'])}: {_e(attempt['metric_name'])} {attempt['baseline_metric']:.3f} in full "
             f"precision, {attempt['quantized_metric']:.3f} quantized.</p>"]
    if attempt["secondary_metrics"]:
        parts.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v:.5g}</td></tr>"
                                          for k, v in attempt["secondary_metrics"].items()) + "</table>")
    if attempt["per_slice"]:
        slices = attempt["per_slice"]
        columns = list(next(iter(slices.values())))
        parts.append("<h3>Per class</h3><table><tr><th>class</th>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>"
                     + "".join(f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{row[c]:.4g}</td>" for c in columns) + "</tr>"
                               for name, row in slices.items()) + "</table>")
    if attempt["worst_disagreements"]:
        columns = list(dict.fromkeys(k for w in attempt["worst_disagreements"] for k in w))
        parts.append("<h3>Worst disagreements</h3><table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{_e(w.get(c, ''))}</td>" for c in columns) + "</tr>"
                               for w in attempt["worst_disagreements"]) + "</table>")
    return "".join(parts)


def _sensitivity(groups: list[dict], unit: str) -> str:
    return (f"<table><tr><th>rank</th><th>group</th><th>nodes</th><th>drop with only this group quantized ({_e(unit)})</th></tr>"
            + "".join(f"<tr><td>{i}</td><td>{_e(g['group'])}</td><td>{len(g['nodes'])}</td><td>{g['accuracy_drop']:.3f}</td></tr>"
                      for i, g in enumerate(groups, 1)) + "</table>")


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _e(value: object) -> str:
    return html.escape(str(value))


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; color: #1f2328; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
tr.chosen { background: #dafbe1; }
.gate { font-size: 1.4em; font-weight: bold; }
svg { max-width: 100%; height: auto; }
"""
