"""Decoder LMs through the one quantize-model flow: llama.cpp's converter and quantizer and
llm-compressor's AWQ on a Llama trained here, behind the format seam; the GGUF escalation
ladder; a failing step recorded while the ladder goes on; drift measured on text."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

from flows.cli import EXIT_CODES, main
from quantmill.calibration import measure_drift
from quantmill.formats import baseline_for, get_format
from quantmill.formats.awq import AwqOptions
from quantmill.formats.base import NoOptions
from quantmill.formats.gguf import GgufOptions
from quantmill.metrics import compare_logits
from quantmill.models import get_kind, resolve_model
from quantmill.models.hf_causal_lm import text_dataset
from quantmill.runtimes import llama_cpp, transformers
from tests.browser import check_report_html


@pytest.fixture(scope="module")
def llama_model(tiny_llama, tmp_path_factory):
    return resolve_model(str(tiny_llama.model_dir), "language-modeling", tmp_path_factory.mktemp("work"))


def _run(tiny_llama, out: Path, *extra: str) -> tuple[int, dict]:
    code = main([
        "run", str(tiny_llama.model_dir), "--task", "language-modeling", "--calibration-data", str(tiny_llama.train_text),
        "--eval-data", str(tiny_llama.heldout_text), "--out", str(out), "--no-register", *extra,
    ])
    return code, json.loads((out / "report.json").read_text())


def _table_starting_with_q4_k_m(tmp_path: Path, *more_rows: str) -> Path:
    table = tmp_path / "table"
    table.mkdir()
    (table / "q4.csv").write_text(
        "family,hardware,format,accuracy_drop,compression,speedup,n_measurements,source\n"
        "decoder-lm,cpu,gguf-q4_k_m,0.1,6.1,1.0,1,test row\n" + "".join(f"{row}\n" for row in more_rows)
    )
    return table


def test_trained_model_beats_the_unigram_baseline(tiny_llama):
    assert tiny_llama.heldout_perplexity < 0.5 * tiny_llama.unigram_perplexity


def test_gguf_round_trip_matches_the_original_logits(tiny_llama, llama_model, tmp_path):
    windows = text_dataset(llama_model.path, tiny_llama.heldout_text, 8).inputs["input_ids"]
    reference = transformers.logits(llama_model.path, windows)
    f16 = baseline_for("hf-causal-lm").quantize(llama_model, NoOptions(), None, tmp_path)
    q8 = get_format("gguf-q8_0").quantize(llama_model, GgufOptions("Q8_0"), None, tmp_path)
    assert q8.stat().st_size < 0.6 * f16.stat().st_size

    f16_result = compare_logits(reference, llama_cpp.logits(f16, windows), windows)
    assert f16_result.secondary["top1_agreement"] > 97.0
    assert f16_result.secondary["mean_kl"] < 1e-3
    assert abs(f16_result.accuracy_drop) < 0.5
    q8_result = compare_logits(reference, llama_cpp.logits(q8, windows), windows)
    assert abs(q8_result.accuracy_drop) < 2.0
    # Perplexity cannot tell 4-bit from 8-bit on a model this small; the KL divergence can.
    q4 = get_format("gguf-q4_k_m").quantize(llama_model, GgufOptions("Q4_K_M"), None, tmp_path)
    q4_result = compare_logits(reference, llama_cpp.logits(q4, windows), windows)
    assert q4_result.secondary["mean_kl"] > 5 * q8_result.secondary["mean_kl"]
    assert q4_result.secondary["mean_kl_ci_low"] > q8_result.secondary["mean_kl_ci_high"]


def test_an_importance_matrix_from_the_calibration_text_reaches_the_gguf(tiny_llama, llama_model, tmp_path):
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    def imatrix_metadata(path: Path) -> dict:
        return {k: v for k, v in Llama(str(path), vocab_only=True, verbose=False).metadata.items() if "imatrix" in k}

    calibration = get_kind("hf-causal-lm").load_data(llama_model, tiny_llama.train_text).take(np.arange(16))
    q4 = get_format("gguf-q4_k_m").quantize(llama_model, GgufOptions("Q4_K_M", imatrix=True), calibration, tmp_path)
    plain = get_format("gguf-q4_k_m").quantize(llama_model, GgufOptions("Q4_K_M"), None, tmp_path)
    layers = json.loads((tiny_llama.model_dir / "config.json").read_text())["num_hidden_layers"]
    # llama-quantize records the matrix it used: one chunk per calibration window, an entry
    # for each of the 7 linear weights of every layer.
    metadata = imatrix_metadata(q4)
    assert metadata["quantize.imatrix.chunks_count"] == "16"
    assert metadata["quantize.imatrix.entries_count"] == str(7 * layers)
    # ... and the text it read, kept beside it: the calibration windows, decoded.
    tokenizer = AutoTokenizer.from_pretrained(str(llama_model.path))
    first = tokenizer.decode(calibration.inputs["input_ids"][0], skip_special_tokens=True)
    assert Path(metadata["quantize.imatrix.dataset"]).read_text().startswith(first + "\n")
    assert plain != q4 and imatrix_metadata(plain) == {}
    windows = text_dataset(llama_model.path, tiny_llama.heldout_text, 8).inputs["input_ids"]
    kl = compare_logits(transformers.logits(llama_model.path, windows), llama_cpp.logits(q4, windows), windows)
    assert 0 < kl.secondary["mean_kl"] < 0.01


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_a_missed_budget_climbs_each_ladder_each_rung_measured(tiny_llama, tmp_path):
    # A budget no quantized model meets shows every rung: a KL divergence from full precision
    # below what any 4- to 8-bit scheme gives (Q8_0 is about 2e-5 nats on this model).
    table = _table_starting_with_q4_k_m(tmp_path, "decoder-lm,cpu,awq-w4a16,0.2,2.0,0.7,1,test row")
    code, report = _run(tiny_llama, tmp_path / "out", "--max-ppl-increase", "5", "--max-kld", "1e-7",
                        "--benchmark-table", str(table))
    assert code == EXIT_CODES["failed"] and report["gate"]["status"] == "failed"
    assert report["budget"] == {"value": 5.0, "unit": "% perplexity increase", "parameter": "max_ppl_increase",
                                "max_kld": 1e-7}
    assert [c["format"] for c in report["candidates"]] == ["gguf-q4_k_m", "awq-w4a16", "gguf-q8_0"]
    gguf = [a for a in report["attempts"] if a["format"].startswith("gguf-")]
    assert [(a["options"]["scheme"], a["options"]["imatrix"]) for a in gguf] == [
        ("Q4_K_M", False), ("Q4_K_M", True), ("Q5_K_M", False), ("Q6_K", False), ("Q8_0", False)]
    assert "importance matrix from the calibration text" in gguf[1]["reason"]
    assert all("next scheme up" in a["reason"] for a in gguf[2:])
    sizes = [a["size_bytes"] for a in gguf]
    assert sizes == sorted(sizes), "each rung up is larger"
    awq = [a for a in report["attempts"] if a["format"] == "awq-w4a16"]
    assert [a["options"]["group_size"] for a in awq] == [128, 64] and "group size 64" in awq[1]["reason"]
    assert len(report["attempts"]) == 7, "Q8_0, tried on the GGUF ladder, is not made again as the fallback"
    for attempt in report["attempts"]:
        assert attempt["metric_name"] == "perplexity" and not attempt["within_budget"]
        assert attempt["secondary_metrics"]["tokens"] > 0 and attempt["benchmark"]["decode_tokens_per_s"] > 0
    # Speed against full precision on the same runtime: llama.cpp's F16 GGUF, transformers' checkpoint.
    assert {a["format"]: a["baseline_format"] for a in report["attempts"]} == {
        "gguf-q4_k_m": "gguf-f16", "gguf-q5_k_m": "gguf-f16", "gguf-q6_k": "gguf-f16", "gguf-q8_0": "gguf-f16",
        "awq-w4a16": "hf-checkpoint",
    }
    assert set(report["baselines"]) == {"gguf-f16", "hf-checkpoint"} and report["baseline"]["format"] == "gguf-f16"
    awq_ratio = awq[0]["benchmark"]["decode_tokens_per_s"] / report["baselines"]["hf-checkpoint"]["decode_tokens_per_s"]
    assert awq[0]["speedup_vs_baseline"] == pytest.approx(awq_ratio)
    assert "budget of 5 % perplexity increase and mean KLD 1e-07" in report["gate"]["reasons"][0]
    check_report_html(tmp_path / "out")
    assert all(a["secondary_metrics"]["mean_kl"] > 1e-7 for a in report["attempts"])


@pytest.mark.usefixtures("prefect_api")
def test_a_size_search_tries_mixed_gguf_precision_and_ships_the_smallest_within_budget(tiny_llama, tmp_path):
    # Q4_K_M passes; the search then tries llama-quantize's per-tensor overrides around it.
    code, report = _run(tiny_llama, tmp_path / "out", "--max-ppl-increase", "5", "--objective", "size",
                        "--search-seconds", "600", "--benchmark-seconds", "0.3",
                        "--benchmark-table", str(_table_starting_with_q4_k_m(tmp_path)))
    mixed = {tuple(map(tuple, a["options"]["tensor_types"])): a for a in report["attempts"] if a["options"].get("tensor_types")}
    plain = next(a for a in report["attempts"] if a["options"] == {"scheme": "Q4_K_M", "imatrix": False, "tensor_types": []})
    smaller, better = mixed[(("ffn_(up|gate)", "q3_k"),)], mixed[(("attn_(q|k|v|output)", "q5_k"),)]
    assert "search: FFN up/gate projections at q3_k" in smaller["reason"]
    assert smaller["size_bytes"] < plain["size_bytes"] < better["size_bytes"]
    assert smaller["secondary_metrics"]["mean_kl"] > plain["secondary_metrics"]["mean_kl"]
    tensors = {t.name: t.tensor_type.name for t in GGUFReader(smaller["path"]).tensors}
    assert tensors["blk.0.ffn_up.weight"] == tensors["blk.0.ffn_gate.weight"] == "Q3_K"
    assert tensors["blk.0.attn_q.weight"] == "Q4_K"
    within = [a for a in report["attempts"] if a["within_budget"]]
    smallest = min(within, key=lambda a: a["size_bytes"])
    assert report["search"]["chosen_attempt"] == smallest["index"] == report["gate"]["chosen_attempt"]
    assert code == EXIT_CODES["passed"] and smaller in within, "q3_k FFN stays within 5 % on this model"


@pytest.mark.usefixtures("prefect_api")
def test_a_failing_step_is_recorded_and_the_ladder_goes_on(tiny_llama, tmp_path, monkeypatch):
    # An ftype llama.cpp does not know: its quantizer refuses it, a real failure (in the
    # quantize worker process, where the format's code runs).
    from quantmill import formats
    from tests.crashing import UnknownFtypeGguf

    monkeypatch.setitem(formats.FORMATS, "gguf-q4_k_m", UnknownFtypeGguf("Q4_K_M", "refused"))
    table = _table_starting_with_q4_k_m(tmp_path)
    out = tmp_path / "out"
    code, report = _run(tiny_llama, out, "--max-ppl-increase", "5", "--benchmark-table", str(table))
    assert code == EXIT_CODES[report["gate"]["status"]]
    assert [f["format"] for f in report["failures"]] == ["gguf-q4_k_m"]
    assert "returned" in report["failures"][0]["reason"]
    # The next rung, the same scheme with an importance matrix, goes through llama.cpp's own
    # llama-quantize (which knows Q4_K_M by name) and ships.
    first = report["attempts"][0]
    assert (first["format"], first["options"]["imatrix"], first["index"]) == ("gguf-q4_k_m", True, 2)
    assert first["within_budget"] and report["gate"]["chosen_attempt"] == first["index"]
    assert not any(p.name.startswith("01-") for p in Path(first["path"]).parent.parent.iterdir()), "nothing of the failed one"


def test_awq_options_reach_the_checkpoint_and_it_loads_back(tiny_llama, llama_model, tmp_path):
    kind = get_kind("hf-causal-lm")
    calibration = kind.load_data(llama_model, tiny_llama.train_text)
    reports = []
    checkpoint = get_format("awq-w4a16").quantize(llama_model, AwqOptions(group_size=64), calibration, tmp_path,
                                                  lambda done, total: reports.append((done, total)))
    layers = json.loads((tiny_llama.model_dir / "config.json").read_text())["num_hidden_layers"]
    assert reports == [(done, layers) for done in range(layers + 1)], "one report as each decoder layer is reached, then done"
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["quantization_config"]["format"] == "pack-quantized"
    weights = config["quantization_config"]["config_groups"]["group_0"]["weights"]
    assert (weights["group_size"], weights["num_bits"]) == (64, 4)
    windows = text_dataset(llama_model.path, tiny_llama.heldout_text, 8).inputs["input_ids"]
    result = compare_logits(transformers.logits(llama_model.path, windows), transformers.logits(checkpoint, windows), windows)
    assert 0 < result.secondary["mean_kl"] < 0.05
    assert abs(result.accuracy_drop) < 5.0


def test_text_drift_is_measured_on_per_window_perplexity(tiny_llama, llama_model, tmp_path):
    """More of the same code is not drift; English legal prose, to a model of Python code, is."""
    kind = get_kind("hf-causal-lm")
    stored = kind.features(llama_model, kind.load_data(llama_model, tiny_llama.train_text))
    same = kind.features(llama_model, kind.load_data(llama_model, tiny_llama.heldout_text))
    prose = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "LICENSE.txt"
    other = kind.features(llama_model, kind.load_data(llama_model, prose))
    assert set(stored) == {"window_log_perplexity"}
    stable, drifted = measure_drift(stored, same), measure_drift(stored, other)
    assert not stable.drifted, stable
    assert drifted.drifted and drifted.ks_statistic > 0.5, drifted


def test_parallel_llama_cpp_loads_leave_stdout_working(tiny_llama, llama_model, tmp_path, capfd):
    """llama.cpp models may be evaluated from parallel threads; the process must keep its stdout."""
    from concurrent.futures import ThreadPoolExecutor

    windows = text_dataset(llama_model.path, tiny_llama.heldout_text, 2).inputs["input_ids"]
    f16 = baseline_for("hf-causal-lm").quantize(llama_model, NoOptions(), None, tmp_path)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: llama_cpp.logits(f16, windows), range(8)))
    import os

    os.write(1, b"still-visible\n")
    assert "still-visible" in capfd.readouterr().out
