"""Decoder LMs: llama.cpp's converter and quantizer on a Llama trained here, and the
language-model flow fanning out over formats."""

import json

import pytest

from flows.cli import EXIT_CODES, main
from quantmill.exporters import gguf
from quantmill.exporters.gguf import convert_to_gguf, quantize_gguf
from quantmill.lm_evaluation import compare, llama_cpp_logits, token_windows, torch_logits


def test_trained_model_beats_the_unigram_baseline(tiny_llama):
    assert tiny_llama.heldout_perplexity < 0.5 * tiny_llama.unigram_perplexity


def test_gguf_round_trip_matches_the_original_logits(tiny_llama, tmp_path):
    windows = token_windows(tiny_llama.model_dir, tiny_llama.heldout_text, 8)
    reference = torch_logits(tiny_llama.model_dir, windows)
    f16 = convert_to_gguf(tiny_llama.model_dir, tmp_path / "f16.gguf")
    q8 = quantize_gguf(f16, tmp_path / "q8.gguf", "Q8_0")
    assert q8.stat().st_size < 0.6 * f16.stat().st_size

    f16_result = compare(reference, llama_cpp_logits(f16, windows), windows)
    assert f16_result.secondary["top1_agreement"] > 97.0
    assert f16_result.secondary["mean_kl"] < 1e-3
    assert abs(f16_result.accuracy_drop) < 0.5
    q8_result = compare(reference, llama_cpp_logits(q8, windows), windows)
    assert abs(q8_result.accuracy_drop) < 2.0


@pytest.mark.usefixtures("prefect_api")
def test_one_format_failing_does_not_stop_the_others(tiny_llama, tmp_path, monkeypatch):
    # An ftype llama.cpp does not know: its quantizer refuses it, a real failure.
    monkeypatch.setitem(gguf.FTYPES, "Q4_K_M", 9999)
    out = tmp_path / "out"
    code = main([
        "run", str(tiny_llama.model_dir), "--task", "language-modeling", "--calibration-data", str(tiny_llama.train_text),
        "--eval-data", str(tiny_llama.heldout_text), "--max-ppl-increase", "5", "--out", str(out),
    ])
    report = json.loads((out / "report.json").read_text())
    assert code == EXIT_CODES[report["gate"]["status"]]
    assert [c["format"] for c in report["candidates"]] == ["gguf-q8_0", "gguf-q4_k_m"]
    assert [f["format"] for f in report["failures"]] == ["gguf-q4_k_m"]
    assert "returned 1" in report["failures"][0]["reason"]
    assert [a["format"] for a in report["attempts"]] == ["gguf-q8_0"]
    attempt = report["attempts"][0]
    assert attempt["metric_name"] == "perplexity" and attempt["accuracy_drop"] < 5
    assert attempt["benchmark"]["decode_tokens_per_s"] > 0 and 0 < attempt["benchmark"]["fraction_of_bound"] < 1.5
    assert report["gate"]["chosen_attempt"] == attempt["index"]
    assert not (out / "attempts" / "02-gguf-q4_k_m").exists()
