"""The measured benchmark table that format selection reads: CSV rows of
model family x hardware x format -> accuracy drop, compression, speedup."""

from __future__ import annotations

import argparse
import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from quantmill.errors import InputError


@dataclass(frozen=True)
class TableRow:
    """One measured row. accuracy_drop in metric points; compression = FP32 size / size;
    speedup = throughput / FP32 throughput at batch 32; source says how it was measured;
    machine is the identity of the hardware it was measured on (Hardware.identity: the
    accelerator, the CPU and its kernel features), '' where a table does not say; model the
    model measured; test_model whether it is a test model trained here (a tiny Llama, the
    digits CNN), whose rows selection uses only for a format no real model has rows for; kld
    the mean KL divergence from full precision (nats; language models), None where not
    measured; unavailable, where not '', why the format is not offered on this hardware
    although it runs there: it did not beat its unquantized baseline beyond the noise, and
    the reason gives the measured ratio (selection never picks it there)."""

    family: str
    hardware: str
    format: str
    accuracy_drop: float
    compression: float
    speedup: float
    n_measurements: int
    source: str
    machine: str = ""
    model: str = ""
    test_model: bool = False
    kld: float | None = None
    unavailable: str = ""


@dataclass(frozen=True)
class MeasuredFormat:
    """Every row of one family x hardware x format, aggregated: the median speedup and its
    lowest and highest measurement, the medians of the drop and compression, n
    measurements, and the sources."""

    family: str
    hardware: str
    format: str
    speedup: float
    speedup_low: float
    speedup_high: float
    accuracy_drop: float
    compression: float
    n: int
    sources: str


COLUMNS = tuple(f.name for f in fields(TableRow))
# A table may stop after any column from source on (tables written before rows named their
# machine or model): the columns it lacks take their defaults; a row without a machine
# counts as measured elsewhere.
_REQUIRED = COLUMNS.index("source") + 1
_BOOLEANS = {"true": True, "false": False, "": False}
# The reviewed, measured table shipped with quantmill.
SHIPPED_TABLE_DIR = Path(__file__).resolve().parent.parent / "benchmark_tables"


def load_table(directory: Path) -> tuple[TableRow, ...]:
    """Return every row of every *.csv in directory. Raises InputError for a malformed file."""
    rows: list[TableRow] = []
    for path in sorted(directory.glob("*.csv")):
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            names = tuple(reader.fieldnames or ())
            if len(names) < _REQUIRED or names != COLUMNS[:len(names)]:
                raise InputError(path, f"columns {reader.fieldnames} differ from {list(COLUMNS)}")
            for number, raw in enumerate(reader, 2):
                try:
                    test_model = (raw.get("test_model") or "").lower()
                    if test_model not in _BOOLEANS:
                        raise ValueError(f"test_model {raw['test_model']!r} is neither true nor false")
                    rows.append(TableRow(
                        raw["family"], raw["hardware"], raw["format"], float(raw["accuracy_drop"]),
                        float(raw["compression"]), float(raw["speedup"]), int(raw["n_measurements"]),
                        raw["source"], raw.get("machine") or "", raw.get("model") or "", _BOOLEANS[test_model],
                        float(raw["kld"]) if raw.get("kld") else None, raw.get("unavailable") or "",
                    ))
                except ValueError as err:
                    raise InputError(path, f"line {number}: {err}") from None
    return tuple(rows)


def table_script_parser(doc: str | None) -> argparse.ArgumentParser:
    """Return the argument parser of a benchmark script that measures table rows (doc, its
    docstring, as the help): it has --append-table, which appends the rows it measured to
    its shipped table."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--append-table", action="store_true", help="append the measured rows to the shipped table")
    return parser


def append_rows(path: Path, rows: tuple[TableRow, ...]) -> None:
    """Append rows to the CSV at path, writing the header when the file is new. Raises
    InputError for a file whose header is not COLUMNS (rewrite it with every column first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    if not new:
        with open(path, newline="") as handle:
            if tuple(next(csv.reader(handle), ())) != COLUMNS:
                raise InputError(path, f"header differs from {list(COLUMNS)}; rewrite it with every column first")
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows({**asdict(row), "test_model": str(row.test_model).lower(),
                          "kld": "" if row.kld is None else row.kld} for row in rows)


def aggregate(rows: tuple[TableRow, ...] | list[TableRow]) -> tuple[MeasuredFormat, ...]:
    """Return one MeasuredFormat per family x hardware x format in rows, a row counting as
    n_measurements measurements (medians, so one odd run does not move a format's place)."""
    if not rows:
        return ()
    frame = pd.DataFrame([asdict(r) for r in rows])
    frame = frame.loc[frame.index.repeat(frame["n_measurements"].clip(lower=1))]
    grouped = frame.groupby(["family", "hardware", "format"], sort=True)
    table = grouped.agg(
        accuracy_drop=("accuracy_drop", "median"), compression=("compression", "median"),
        speedup=("speedup", "median"), speedup_low=("speedup", "min"), speedup_high=("speedup", "max"),
        n=("speedup", "size"), sources=("source", lambda s: "; ".join(sorted(set(s)))),
    ).reset_index()
    return tuple(MeasuredFormat(**{k: (int(v) if k == "n" else v) for k, v in record.items()})
                 for record in table.to_dict("records"))


# Each run's own measured rows, logged with its MLflow run (quantmill.tracking.runs).
RUN_ROWS_FILE = "benchmark_rows.csv"


def measured_targets(report: dict) -> list[dict]:
    """Return the report's targets that were measured (each with target, hardware and
    speedup_vs_baseline per attempt label); a run benchmarked in-process has none, and then
    its own target with the attempts' speedups stands for them."""
    return [t for t in report.get("targets") or [] if t["status"] == "measured"] or [
        {"target": report["target"], "hardware": report["hardware"]["description"],
         "machine": report["hardware"].get("identity", ""),
         "speedup_vs_baseline": {str(a["index"]): a["speedup_vs_baseline"] for a in report["attempts"]}}]


def run_rows(report: dict) -> tuple[TableRow, ...]:
    """Return the rows one run measured (a report.json dict): per attempt and target where
    it was benchmarked, the confirmed drop (the half that chose nothing), the compression
    and the speedup against full precision on the same runtime, as one measurement."""
    model = report["model"]
    when = report["created_at"][:10]
    sizes = {name: bench["size_bytes"] for name, bench in report.get("baselines", {}).items()}
    rows = []
    for target in measured_targets(report):
        for attempt in report["attempts"]:
            speedup = target["speedup_vs_baseline"].get(str(attempt["index"]))
            base_size = sizes.get(attempt["baseline_format"])
            if speedup is None or base_size is None:
                continue
            confirmed = attempt.get("confirmation") or attempt
            kld = confirmed["secondary_metrics"].get("mean_kl")
            rows.append(TableRow(
                model["family"], target["target"], attempt["format"], round(confirmed["accuracy_drop"], 4),
                round(base_size / attempt["size_bytes"], 3), round(speedup, 3), 1,
                f"quantmill run of {model['name']} v{model['version'] or '-'} on {target['hardware']} {when} "
                f"(drop in {report['budget']['unit']})", target.get("machine", ""), model["name"], False,
                None if kld is None else round(kld, 5),
            ))
    return tuple(rows)


_SHOWN = ("family", "hardware", "format", "accuracy_drop", "compression", "speedup", "speedup_low", "speedup_high", "n")


def format_table(measured: tuple[MeasuredFormat, ...]) -> str:
    """Return the aggregated table as text, one line per family x hardware x format."""
    if not measured:
        return "no measured rows"
    frame = pd.DataFrame([asdict(m) for m in measured])[list(_SHOWN)]
    return frame.to_string(index=False, float_format="{:.3f}".format)
