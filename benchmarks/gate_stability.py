"""The same inputs, the same decision: runs `quantmill run` N times on the digits CNN with
the same files and budget (each run benchmarked afresh, caches of quantize and evaluate
included, as a user's re-run would be) and prints each run's gate decision, the chosen
attempt's speed ratio and its 95% interval, its drop confirmed on the held-back half with
its interval, and how many runs agreed with the most common decision.

    .venv/bin/python benchmarks/gate_stability.py [--runs 10] [--benchmark-seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

from flows.cli import main as quantmill
from quantmill.state import quantmill_home
from quantmill.zoo.digits import build_digits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--benchmark-seconds", type=float, default=1.0)
    args = parser.parse_args()
    digits = build_digits(quantmill_home() / "models" / "digits")
    decisions = []
    with tempfile.TemporaryDirectory(prefix="quantmill-stability-") as scratch:
        for run in range(1, args.runs + 1):
            out = Path(scratch) / f"run-{run}"
            quantmill(["run", str(digits.model), "--task", "classification", "--calibration-data", str(digits.calibration),
                       "--eval-data", str(digits.evaluation), "--max-accuracy-drop", "1", "--no-register", "--out", str(out),
                       "--benchmark-seconds", str(args.benchmark_seconds)])
            report = json.loads((out / "report.json").read_text())
            chosen = next((a for a in report["attempts"] if a["index"] == report["gate"]["chosen_attempt"]), None)
            decisions.append(report["gate"]["status"])
            if chosen is None:
                print(f"run {run}: {report['gate']['status']}")
                continue
            low, high = chosen["speedup_ci"]
            confirmed = chosen["confirmation"]
            print(f"run {run}: {report['gate']['status']:<13} {chosen['format']:<18} {chosen['speedup_vs_baseline']:.2f}x "
                  f"(95% CI {low:.2f}-{high:.2f}) {chosen['speed_verdict']}; confirmed drop {confirmed['accuracy_drop']:.2f} "
                  f"(95% CI {confirmed['drop_interval'][0]:.2f} to {confirmed['drop_interval'][1]:.2f})", flush=True)
    decision, agreeing = Counter(decisions).most_common(1)[0]
    print(f"\nsame decision ({decision}) in {agreeing} of {len(decisions)} runs")


if __name__ == "__main__":
    main()
