from pathlib import Path

import pytest

from quantmill.benchmark_table import TableRow, append_rows, load_table
from quantmill.errors import QuantmillError
from quantmill.formats import select_formats


def _row(fmt, drop, speedup, n=1, family="cnn"):
    return TableRow(family, "cpu", fmt, drop, 4.0, speedup, n, "test")


def test_within_budget_fastest_first_then_over_budget_then_fp16_last():
    table = (_row("onnx-int8-static", 2.5, 2.0), _row("onnx-int8-dynamic", 0.4, 1.3))
    candidates = select_formats("cnn", "cpu", 1.0, table)
    assert [c.format for c in candidates] == ["onnx-int8-dynamic", "onnx-int8-static", "onnx-fp16"]
    assert "within the 1-point budget" in candidates[0].reason
    assert "over the 1-point budget" in candidates[1].reason


def test_rows_for_one_format_are_averaged_by_measurement_count():
    table = (_row("onnx-int8-static", 0.0, 1.0, n=1), _row("onnx-int8-static", 3.0, 2.0, n=2))
    first = select_formats("cnn", "cpu", 1.0, table)[0]
    assert first.format == "onnx-int8-static"
    assert "drop 2.00 pts over" in first.reason and "3 run(s)" in first.reason


def test_unknown_family_gets_the_conservative_choice_and_says_so():
    candidates = select_formats("mlp", "cpu", 1.0, (_row("onnx-int8-static", 0.1, 2.0),))
    assert [c.format for c in candidates] == ["onnx-int8-dynamic", "onnx-fp16"]
    assert all("conservative" in c.reason for c in candidates)


def test_unknown_target_is_an_error():
    with pytest.raises(QuantmillError, match="unknown target 'tpu'"):
        select_formats("cnn", "tpu", 1.0, ())


def test_table_round_trip_and_the_shipped_table_loads(tmp_path):
    rows = (_row("onnx-fp16", 0.0, 0.9),)
    append_rows(tmp_path / "t.csv", rows)
    assert load_table(tmp_path) == rows
    shipped = load_table(Path(__file__).resolve().parents[2] / "benchmark_tables")
    assert {r.family for r in shipped} >= {"cnn", "transformer-encoder"}
    assert all(r.source for r in shipped)
