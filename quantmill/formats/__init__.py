"""The format registry, and which formats to try first for a model on a target.

A format is one module here (one class, possibly registered more than once); nothing
outside this folder dispatches on a format's name or a file suffix.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantmill.benchmark_table import MeasuredFormat, TableRow, aggregate
from quantmill.errors import QuantmillError
from quantmill.formats import awq, checkpoint, gguf, onnx, torchao
from quantmill.formats.base import CONSERVATIVE, FALLBACK, Format, NoOptions, Step
from quantmill.hardware import same_machine
from quantmill.targets import Target

FORMATS: dict[str, Format] = {f.name: f for module in (onnx, gguf, awq, checkpoint, torchao) for f in module.FORMATS}

__all__ = ["FORMATS", "Candidate", "Format", "NoOptions", "Step", "baseline_for", "baselines_for", "get_format", "offered", "select_formats"]


def get_format(name: str) -> Format:
    """Return the format called name. Raises QuantmillError naming the known formats."""
    if name not in FORMATS:
        raise QuantmillError(f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


def baseline_for(kind: str, runtime: str | None = None) -> Format:
    """Return the full-precision format of model kind on runtime (by default the kind's
    primary baseline, the first registered). Raises QuantmillError when there is none."""
    found = [f for f in FORMATS.values() if not f.candidate and kind in f.kinds and runtime in (None, f.runtime)]
    if not found:
        raise QuantmillError(f"no full-precision baseline for {kind} models on {runtime or 'any runtime'}")
    return found[0]


def baselines_for(kind: str, format_names: list[str]) -> dict[str, str]:
    """Return, for each named format, the baseline format it is measured against: full
    precision on the same runtime, so that a speed ratio never compares two runtimes."""
    return {name: baseline_for(kind, get_format(name).benchmark_runner().name).name for name in format_names}


def offered(kind: str, target: Target) -> tuple[Format, ...]:
    """Return the candidate formats for model kind on target: those applying to the kind
    whose runtime the target offers."""
    return tuple(f for f in FORMATS.values() if f.candidate and kind in f.kinds and target.offers(f.runtime))


@dataclass(frozen=True)
class Candidate:
    """A format to try, in order, with the sentence that says why."""

    format: str
    reason: str


def select_formats(
    kind: str, family: str, target: Target, budget: float, unit: str, table: tuple[TableRow, ...],
    machine: str | None = None,
) -> tuple[Candidate, ...]:
    """Return the ordered candidates for a model of kind and family on target within budget
    (in unit, the unit of the table's drops for this family), preferring the rows measured
    on machine (a Hardware.identity; None: not known here).

    Measured formats within budget come first, fastest first; measured formats over budget
    follow (escalation may bring them in); the fallback closes the list. Only rows measured
    on the same kind of machine (hardware.same_machine) count when there are any; otherwise
    the rows measured elsewhere do, and each reason says so. Of those, a format's rows from
    real models stand for it where there are any, its test models' rows otherwise (the reason
    says so). With nothing measured, the
    formats with no calibration risk, then the fallback. A format the table marks unavailable
    on target for this family (it did not beat its baseline there) is never a candidate.
    Raises QuantmillError for a target no format runs on for this kind, naming the formats
    that stepped aside.
    """
    stepped_aside = {r.format: r.unavailable for r in table
                     if r.unavailable and r.family == family and r.hardware == target.name}
    formats = tuple(f for f in offered(kind, target) if f.name not in stepped_aside)
    if not formats:
        aside = "".join(f"; {name}: {why}" for name, why in sorted(stepped_aside.items()))
        raise QuantmillError(f"no format quantmill makes for {kind} models runs on target {target.name!r}{aside}")
    names = {f.name for f in formats}
    fallback = next((f.name for f in formats if f.safety == FALLBACK), formats[-1].name)
    rows = [r for r in table if r.family == family and r.hardware == target.name and r.format in names]
    here = [r for r in rows if machine and same_machine(r.machine, machine)]
    elsewhere = "" if here or not rows else (
        f"measured elsewhere ({'; '.join(sorted({r.machine or 'hardware not stated' for r in rows}))}), "
        f"no rows for this machine ({machine or 'its hardware is not known here'}): ")
    pool = here or rows
    # A real model's rows speak for a format; a test model's only where no real model's do.
    real = {r.format for r in pool if not r.test_model}
    pool = [r for r in pool if not r.test_model or r.format not in real]
    test_only = {r.format for r in pool if r.test_model}
    measured = aggregate(pool)
    if not measured:
        conservative = [f.name for f in formats if f.safety == CONSERVATIVE] + [fallback]
        return tuple(
            Candidate(name, f"no measured rows for {family} on {target.name}: conservative choice "
                            f"({'last resort' if name == fallback else 'no calibration risk'})")
            for name in conservative
        )
    within = sorted((r for r in measured if r.accuracy_drop <= budget), key=lambda r: -r.speedup)
    over = sorted((r for r in measured if r.accuracy_drop > budget), key=lambda r: r.accuracy_drop)
    candidates = [Candidate(r.format, elsewhere + _why(r, budget, unit, True, r.format in test_only)) for r in within]
    candidates += [Candidate(r.format, elsewhere + _why(r, budget, unit, False, r.format in test_only)) for r in over]
    if fallback not in {c.format for c in candidates}:
        candidates.append(Candidate(fallback, f"not measured for {family} on {target.name}; last resort"))
    return tuple(candidates)


def _why(row: MeasuredFormat, budget: float, unit: str, within: bool, test_model: bool) -> str:
    verdict = f"within the budget of {budget:g} {unit}" if within else f"over the budget of {budget:g} {unit}, tried after those within"
    return (
        f"{'measured on test models only: ' if test_model else ''}"
        f"measured drop {row.accuracy_drop:.2f} {unit} {verdict}; {row.speedup:.2f}x throughput "
        f"({row.speedup_low:.2f}-{row.speedup_high:.2f}x), {row.compression:.2f}x smaller; medians of {row.n} run(s) "
        f"({row.sources})"
    )
