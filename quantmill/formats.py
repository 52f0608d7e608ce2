"""The formats quantmill can produce, and which to try first for a model on a target."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from quantmill.benchmark_table import TableRow
from quantmill.errors import QuantmillError


@dataclass(frozen=True)
class Format:
    """A deployable format: its runtime, and whether it needs calibration data."""

    name: str
    runtime: str
    scheme: str
    calibrated: bool


FORMATS = {
    f.name: f for f in (
        Format("onnx-int8-static", "onnxruntime", "INT8 QDQ, per-channel weights, calibrated activations", True),
        Format("onnx-int8-dynamic", "onnxruntime", "INT8 weights, activations quantized at run time", False),
        Format("onnx-fp16", "onnxruntime", "FP16 weights and compute, FP32 inputs and outputs", False),
        Format("gguf-q8_0", "llama.cpp", "GGUF Q8_0: 8-bit blocks of 32 weights", False),
        Format("gguf-q4_k_m", "llama.cpp", "GGUF Q4_K_M: 4-bit k-quants, 6-bit for sensitive tensors", False),
        Format("awq-w4a16", "transformers (compressed-tensors)", "AWQ 4-bit weights, group size 128, 16-bit activations", True),
    )
}
ONNX_FORMATS = ("onnx-int8-static", "onnx-int8-dynamic", "onnx-fp16")
LM_FORMATS = ("gguf-q8_0", "gguf-q4_k_m", "awq-w4a16")
TARGETS = ("cpu",)
# With nothing measured, the formats whose accuracy does not hang on calibration come
# first; the last is the fallback every list ends with.
CONSERVATIVE = {"decoder-lm": ("gguf-q8_0",), None: ("onnx-int8-dynamic", "onnx-fp16")}


def offered(family: str, target: str) -> tuple[str, ...]:
    """Return the formats quantmill produces for family on target here."""
    return LM_FORMATS if family == "decoder-lm" else ONNX_FORMATS


@dataclass(frozen=True)
class Candidate:
    """A format to try, in order, with the sentence that says why."""

    format: str
    reason: str


def select_formats(
    family: str, target: str, max_accuracy_drop: float, table: tuple[TableRow, ...]
) -> tuple[Candidate, ...]:
    """Return the ordered candidates for family on target within max_accuracy_drop points.

    Measured formats within budget come first, fastest first; measured formats over budget
    follow (escalation may bring them in); FP16 closes the list. Raises QuantmillError for a
    target no format runs on here.
    """
    if target not in TARGETS:
        raise QuantmillError(f"unknown target {target!r}; known here: {', '.join(TARGETS)}")
    formats = offered(family, target)
    conservative = CONSERVATIVE.get(family, CONSERVATIVE[None])
    fallback = conservative[-1]
    measured = _aggregate(r for r in table if r.family == family and r.hardware == target and r.format in formats)
    if not measured:
        return tuple(
            Candidate(name, f"no measured rows for {family} on {target}: conservative choice "
                            f"({'last resort' if name == fallback else 'no calibration risk'})")
            for name in conservative
        )
    within = sorted((r for r in measured if r.accuracy_drop <= max_accuracy_drop), key=lambda r: -r.speedup)
    over = sorted((r for r in measured if r.accuracy_drop > max_accuracy_drop), key=lambda r: r.accuracy_drop)
    candidates = [Candidate(r.format, _why(r, max_accuracy_drop, True)) for r in within]
    candidates += [Candidate(r.format, _why(r, max_accuracy_drop, False)) for r in over]
    if fallback not in {c.format for c in candidates}:
        candidates.append(Candidate(fallback, f"not measured for {family} on {target}; last resort"))
    return tuple(candidates)


def _why(row: TableRow, budget: float, within: bool) -> str:
    verdict = f"within the {budget:g}-point budget" if within else f"over the {budget:g}-point budget, tried after those within"
    return (
        f"measured drop {row.accuracy_drop:.2f} pts {verdict}; {row.speedup:.2f}x throughput, "
        f"{row.compression:.2f}x smaller over {row.n_measurements} run(s) ({row.source})"
    )


def _aggregate(rows) -> list[TableRow]:
    groups: dict[tuple[str, str, str], list[TableRow]] = defaultdict(list)
    for row in rows:
        groups[(row.family, row.hardware, row.format)].append(row)
    merged = []
    for (family, hardware, name), group in groups.items():
        n = sum(r.n_measurements for r in group)

        def mean(attr: str) -> float:
            return sum(getattr(r, attr) * r.n_measurements for r in group) / n

        sources = "; ".join(sorted({r.source for r in group}))
        merged.append(TableRow(family, hardware, name, mean("accuracy_drop"), mean("compression"), mean("speedup"), n, sources))
    return merged
