from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from quantmill.benchmark_table import TableRow, append_rows, load_table
from quantmill.errors import InputError, QuantmillError
from quantmill.formats import FORMATS, baseline_for, get_format, offered, select_formats
from quantmill.formats.awq import AwqOptions
from quantmill.formats.base import NoOptions
from quantmill.formats.gguf import GgufOptions
from quantmill.formats.onnx import OnnxStaticOptions
from quantmill.hardware import Hardware
from quantmill.targets import HOST, TARGETS, get_target

GPU = TARGETS["gpu"]

NO_VNNI = Hardware("cpu", "test cpu", 2, ("avx2",), "test runtime")


def _row(fmt, drop, speedup, n=1, family="cnn"):
    return TableRow(family, "cpu", fmt, drop, 4.0, speedup, n, "test")


def _select(table, family="cnn", kind="onnx", budget=1.0, target="cpu"):
    return select_formats(kind, family, get_target(target), budget, "points", table)


def test_within_budget_fastest_first_then_over_budget_then_fp16_last():
    table = (_row("onnx-int8-static", 2.5, 2.0), _row("onnx-int8-dynamic", 0.4, 1.3))
    candidates = _select(table)
    assert [c.format for c in candidates] == ["onnx-int8-dynamic", "onnx-int8-static", "onnx-fp16"]
    assert "within the budget of 1 points" in candidates[0].reason
    assert "over the budget of 1 points" in candidates[1].reason


def test_rows_for_one_format_are_aggregated_to_medians_with_their_spread():
    # Three measurements of static INT8 (one row counting twice); one odd run of dynamic
    # INT8 at 3x does not put it first, its median does.
    table = (_row("onnx-int8-static", 0.0, 1.0, n=1), _row("onnx-int8-static", 3.0, 2.0, n=2),
             _row("onnx-int8-dynamic", 0.0, 3.0), _row("onnx-int8-dynamic", 0.0, 1.1), _row("onnx-int8-dynamic", 0.0, 1.2))
    first, second = _select(table, budget=5.0)[:2]
    assert first.format == "onnx-int8-static" and second.format == "onnx-int8-dynamic"
    assert "drop 3.00 points within" in first.reason and "2.00x throughput (1.00-2.00x)" in first.reason
    assert "medians of 3 run(s)" in first.reason and "1.20x throughput (1.10-3.00x)" in second.reason


def test_a_real_models_rows_speak_for_a_format_a_test_models_only_where_none_do():
    tiny, real = replace(_row("onnx-int8-static", 0.1, 3.0), test_model=True), _row("onnx-int8-static", 2.5, 1.2)
    dynamic = replace(_row("onnx-int8-dynamic", 0.2, 1.5), test_model=True)
    candidates = _select((tiny, real, dynamic))
    # The real model's 2.5-point drop, not the test model's 0.1, places static INT8.
    assert [c.format for c in candidates] == ["onnx-int8-dynamic", "onnx-int8-static", "onnx-fp16"]
    assert "measured on test models only: measured drop 0.20" in candidates[0].reason
    assert "test models" not in candidates[1].reason and "measured drop 2.50 points over" in candidates[1].reason


def test_unmeasured_family_gets_the_conservative_choice_and_says_so():
    candidates = _select((_row("onnx-int8-static", 0.1, 2.0),), family="mlp")
    assert [c.format for c in candidates] == ["onnx-int8-dynamic", "onnx-fp16"]
    assert all("conservative" in c.reason for c in candidates)
    language = select_formats("hf-causal-lm", "decoder-lm", HOST, 5.0, "% perplexity increase", ())
    assert [c.format for c in language] == ["gguf-q8_0"]


def test_unknown_target_is_an_error():
    with pytest.raises(QuantmillError, match="unknown target 'tpu'; known: cpu, gpu"):
        _select((), target="tpu")


def test_offered_honours_the_target():
    assert {f.name for f in offered("onnx", GPU)} == {"onnx-int8-static", "onnx-int8-dynamic", "onnx-fp16"}
    assert {f.name for f in offered("hf-causal-lm", HOST)} >= {"gguf-q4_k_m", "gguf-q8_0", "awq-w4a16"}
    # On a GPU, language models run as GGUF on llama.cpp's CUDA backend and as torchao's
    # formats in PyTorch; AWQ's runtime (transformers on the CPU) is not offered there.
    assert {f.name for f in offered("hf-causal-lm", GPU)} == {
        "gguf-q3_k_m", "gguf-q4_k_m", "gguf-q5_k_m", "gguf-q6_k", "gguf-q8_0",
        "torchao-int4-wo", "torchao-int8-wo", "torchao-fp8-wo", "torchao-fp8-dq"}
    assert not {f.name for f in offered("hf-causal-lm", HOST)} & {"torchao-int4-wo", "torchao-int8-wo"}
    assert [c.format for c in select_formats("hf-causal-lm", "decoder-lm", GPU, 5.0, "%", ())] == ["gguf-q8_0"]


def test_selection_for_the_gpu_reads_the_gpu_rows_measured_there():
    from quantmill.benchmark_table import SHIPPED_TABLE_DIR

    # benchmark_tables/decoder_lm_gpu.csv: SmolLM2's rows measured with CUDA on an H100
    # (benchmarks/gpu_quality.sh) speak for every GGUF type, ahead of the 8B shape's random-weight
    # rows (a test model's drops): Q8_0 and Q6_K are within 5 %, the rest over. torchao's formats
    # decoded slower than BF16 through the torch-cuda runtime there and are not offered.
    chosen = select_formats("hf-causal-lm", "decoder-lm", GPU, 5.0, "%", load_table(SHIPPED_TABLE_DIR))
    assert [c.format for c in chosen][:2] == ["gguf-q8_0", "gguf-q6_k"] and len(chosen) == 5
    assert all("gpu_quality.sh on NVIDIA H100" in c.reason and "random weights" not in c.reason for c in chosen)
    on_cpu = select_formats("hf-causal-lm", "decoder-lm", HOST, 5.0, "%", load_table(SHIPPED_TABLE_DIR))
    assert not any("H100" in c.reason or "H200" in c.reason for c in on_cpu)


def test_a_worker_without_the_gpu_says_why_for_each_runtime(tmp_path):
    from quantmill.benchmark import benchmark_target
    from quantmill.data import Dataset

    data = Dataset(tmp_path / "eval.txt", "0" * 64, {"input_ids": np.zeros((1, 8), np.int64)})
    measured = benchmark_target(GPU, {"gguf-f16": (get_format("gguf-f16"), tmp_path / "model.gguf")}, data)
    # This machine has no GPU and a CPU build of llama.cpp: no figures, and both reasons.
    assert not measured.measured and measured.benchmarks == {}
    assert "nvidia-smi" in measured.reason and "built without a GPU backend" in measured.reason


def test_every_format_declares_what_the_pipeline_needs():
    for fmt in FORMATS.values():
        assert fmt.kinds and fmt.runtime and fmt.description
        assert fmt.targets and set(fmt.targets) <= set(TARGETS)
    for kind in ("onnx", "hf-encoder", "hf-causal-lm"):
        assert not baseline_for(kind).candidate


def test_escalation_ladders_are_data():
    static = get_format("onnx-int8-static").ladder("why", NO_VNNI)
    assert [s.options.calibration_method for s in static] == ["minmax", "entropy", "percentile"]
    assert all(s.options.reduce_range for s in static)
    gguf = get_format("gguf-q4_k_m").ladder("why", NO_VNNI)
    assert [(s.format, s.options.imatrix) for s in gguf] == [
        ("gguf-q4_k_m", False), ("gguf-q4_k_m", True), ("gguf-q5_k_m", False), ("gguf-q6_k", False), ("gguf-q8_0", False)]
    assert all("next scheme up" in s.reason for s in gguf[2:])
    assert not get_format("gguf-q4_k_m").uses_calibration(gguf[0].options)
    assert get_format("gguf-q4_k_m").uses_calibration(gguf[1].options)
    awq = get_format("awq-w4a16").ladder("why", NO_VNNI)
    assert [s.options.group_size for s in awq] == [128, 64]
    assert get_format("gguf-q8_0").ladder("why", NO_VNNI)[1:] == ()


def test_a_search_mixes_gguf_precision_one_type_either_side_of_the_scheme():
    moves = get_format("gguf-q4_k_m").search_moves(GgufOptions("Q4_K_M", imatrix=True))
    assert [m.options for m in moves] == [GgufOptions("Q4_K_M", True, (("ffn_(up|gate)", "q3_k"),)),
                                          GgufOptions("Q4_K_M", True, (("attn_(q|k|v|output)", "q5_k"),))]
    assert moves[0].options.describe() == "Q4_K_M with imatrix, ffn_(up|gate)=q3_k"
    assert [m.options.tensor_types for m in get_format("gguf-q8_0").search_moves(GgufOptions("Q8_0"))] == [
        (("ffn_(up|gate)", "q6_k"),)], "nothing is larger than q8_0 among the overrides"
    assert get_format("gguf-q4_k_m").search_moves(moves[0].options) == ()
    assert get_format("onnx-int8-dynamic").search_moves(NoOptions()) == ()


def test_options_are_validated_where_they_are_made():
    with pytest.raises(ValueError, match="group_size 100"):
        AwqOptions(group_size=100)
    with pytest.raises(ValueError, match="scheme 'W3'"):
        AwqOptions(scheme="W3")
    with pytest.raises(ValueError, match="unknown GGUF scheme 'Q3_X'"):
        GgufOptions("Q3_X")
    with pytest.raises(ValueError, match="no importance matrix for Q8_0"):
        GgufOptions("Q8_0", imatrix=True)
    with pytest.raises(ValueError, match="attn_v=q2_k: unknown type"):
        GgufOptions("Q4_K_M", tensor_types=(("attn_v", "q2_k"),))
    with pytest.raises(ValueError, match="not a regular expression"):
        GgufOptions("Q4_K_M", tensor_types=(("ffn_(up", "q3_k"),))
    with pytest.raises(ValueError, match="calibration_method 'mean'"):
        OnnxStaticOptions(calibration_method="mean")
    with pytest.raises(ValueError, match="smooth_quant_alpha must be within 0..1, not 1.5"):
        OnnxStaticOptions(smooth_quant_alpha=1.5)
    assert OnnxStaticOptions(smooth_quant_alpha=0.7).describe() == "minmax per-channel SmoothQuant alpha 0.7"


def test_table_round_trip_and_the_shipped_table_loads(tmp_path):
    rows = (_row("onnx-fp16", 0.0, 0.9), replace(_row("gguf-q4_k_m", 3.1, 1.5), model="SmolLM2", kld=0.0421),
            replace(_row("gguf-q8_0", 0.1, 1.2), test_model=True),
            replace(_row("onnx-int8-dynamic", 0.1, 0.6), unavailable="slower than its baseline: 0.60x (0.55-0.65)"))
    append_rows(tmp_path / "t.csv", rows)
    assert load_table(tmp_path) == rows
    # A table written before the model columns loads, as measured on non-test models; it
    # takes no appended rows until rewritten.
    older = tmp_path / "older"
    older.mkdir()
    (older / "t.csv").write_text("family,hardware,format,accuracy_drop,compression,speedup,n_measurements,source,machine\n"
                                 "cnn,cpu,onnx-fp16,0.0,4.0,0.9,1,test,\n")
    assert load_table(older) == rows[:1]
    with pytest.raises(InputError, match="header differs"):
        append_rows(older / "t.csv", rows)
    shipped = load_table(Path(__file__).resolve().parents[2] / "benchmark_tables")
    assert {r.family for r in shipped} >= {"cnn", "transformer-encoder", "decoder-lm"}
    assert all(r.source for r in shipped) and {r.format for r in shipped} <= set(FORMATS)


def test_a_format_the_table_marks_unavailable_on_a_target_is_never_a_candidate_there():
    slower = "slower than FP32 beyond the noise: 0.58x (95% CI 0.40-0.85)"
    table = (_row("onnx-int8-static", 0.2, 2.0), replace(_row("onnx-int8-dynamic", 0.1, 0.58), unavailable=slower))
    assert [c.format for c in _select(table)] == ["onnx-int8-static", "onnx-fp16"]
    # Only on the target (and family) the row was measured for.
    assert "onnx-int8-dynamic" in [c.format for c in _select(table, family="mlp")]
    every = tuple(replace(_row(name, 0.1, 0.5), unavailable=slower)
                  for name in ("onnx-int8-static", "onnx-int8-dynamic", "onnx-fp16"))
    with pytest.raises(QuantmillError, match="onnx-fp16: slower than FP32 beyond the noise: 0.58x"):
        _select(every)


def test_a_model_shipping_its_own_code_is_not_converted(tmp_path):
    from quantmill.errors import InputError
    from quantmill.formats.gguf import convert_to_gguf

    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (tmp_path / "tokenizer_config.json").write_text('{"auto_map": {"AutoTokenizer": ["tok.Custom", null]}}')
    with pytest.raises(InputError, match="ships its own code .auto_map: .'AutoTokenizer'..; quantmill never runs it"):
        convert_to_gguf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_selection_prefers_rows_measured_on_this_kind_of_machine_and_says_when_it_falls_back():
    amx = "Intel Xeon Platinum 8480+ | avx2 avx512_vnni amx_int8"
    epyc = "AMD EPYC | avx2"
    table = (TableRow("cnn", "cpu", "onnx-int8-static", 0.2, 4.0, 2.0, 1, "test", epyc),
             TableRow("cnn", "cpu", "onnx-int8-dynamic", 0.3, 4.0, 1.5, 1, "test", "Intel Xeon | avx2 avx512_vnni amx_int8"))
    here = select_formats("onnx", "cnn", HOST, 1.0, "points", table, amx)
    assert [c.format for c in here] == ["onnx-int8-dynamic", "onnx-fp16"], "only this machine's rows count"
    assert "measured elsewhere" not in here[0].reason
    elsewhere = select_formats("onnx", "cnn", HOST, 1.0, "points", table, "AMD EPYC 9R14 | avx2 avx512_vnni")
    assert [c.format for c in elsewhere][:2] == ["onnx-int8-static", "onnx-int8-dynamic"]
    assert all(c.reason.startswith("measured elsewhere (AMD EPYC | avx2; Intel Xeon") for c in elsewhere[:2])
    assert "no rows for this machine (AMD EPYC 9R14 | avx2 avx512_vnni)" in elsewhere[0].reason
