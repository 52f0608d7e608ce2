"""The measured benchmark table that format selection reads: CSV rows of
model family x hardware x format -> accuracy drop, compression, speedup."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from quantmill.errors import InputError


@dataclass(frozen=True)
class TableRow:
    """One measured row. accuracy_drop in metric points; compression = FP32 size / size;
    speedup = throughput / FP32 throughput at batch 32; source says where it was measured."""

    family: str
    hardware: str
    format: str
    accuracy_drop: float
    compression: float
    speedup: float
    n_measurements: int
    source: str


@dataclass(frozen=True)
class MeasuredFormat:
    """Every row of one family x hardware x format, aggregated: the medians of the drop,
    compression and speedup, the speedup's lowest and highest measurement, n measurements,
    and the sources."""

    family: str
    hardware: str
    format: str
    accuracy_drop: float
    compression: float
    speedup: float
    speedup_low: float
    speedup_high: float
    n: int
    sources: str


COLUMNS = tuple(f.name for f in fields(TableRow))
# The reviewed, measured table shipped with quantmill.
SHIPPED_TABLE_DIR = Path(__file__).resolve().parent.parent / "benchmark_tables"


def load_table(directory: Path) -> tuple[TableRow, ...]:
    """Return every row of every *.csv in directory. Raises InputError for a malformed file."""
    rows: list[TableRow] = []
    for path in sorted(directory.glob("*.csv")):
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise InputError(path, f"columns {reader.fieldnames} differ from {list(COLUMNS)}")
            for number, raw in enumerate(reader, 2):
                try:
                    rows.append(TableRow(
                        raw["family"], raw["hardware"], raw["format"], float(raw["accuracy_drop"]),
                        float(raw["compression"]), float(raw["speedup"]), int(raw["n_measurements"]),
                        raw["source"],
                    ))
                except ValueError as err:
                    raise InputError(path, f"line {number}: {err}") from None
    return tuple(rows)


def append_rows(path: Path, rows: tuple[TableRow, ...]) -> None:
    """Append rows to the CSV at path, writing the header when the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(asdict(row) for row in rows)


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
