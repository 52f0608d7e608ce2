"""Decoder LMs: llama.cpp's converter and quantizer on a Llama trained here, and the
language-model flow fanning out over formats."""

import json
from pathlib import Path

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
    assert {c["format"] for c in report["candidates"]} == {"gguf-q8_0", "gguf-q4_k_m", "awq-w4a16"}
    assert [f["format"] for f in report["failures"]] == ["gguf-q4_k_m"]
    assert "returned 1" in report["failures"][0]["reason"]
    made = {a["format"]: a for a in report["attempts"]}
    assert set(made) == {"gguf-q8_0", "awq-w4a16"}
    for attempt in made.values():
        assert attempt["metric_name"] == "perplexity" and attempt["accuracy_drop"] < 5
        assert attempt["benchmark"]["decode_tokens_per_s"] > 0 and 0 < attempt["benchmark"]["fraction_of_bound"] < 1.5
    awq = made["awq-w4a16"]
    config = json.loads((Path(awq["path"]) / "config.json").read_text())
    assert config["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] == 128
    assert config["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] == 4
    assert report["gate"]["chosen_attempt"] in {a["index"] for a in report["attempts"]}
    assert not any("q4_k_m" in p.name for p in (out / "attempts").iterdir())


def test_awq_round_trip_loads_back_in_transformers(tiny_llama, tmp_path):
    from quantmill.quantizers.awq import quantize_awq

    calibration = token_windows(tiny_llama.model_dir, tiny_llama.train_text, 16)
    checkpoint = quantize_awq(tiny_llama.model_dir, tmp_path / "awq", calibration)
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["quantization_config"]["format"] == "pack-quantized"
    windows = token_windows(tiny_llama.model_dir, tiny_llama.heldout_text, 8)
    result = compare(torch_logits(tiny_llama.model_dir, windows), torch_logits(checkpoint, windows), windows)
    assert 0 < result.secondary["mean_kl"] < 0.05
    assert abs(result.accuracy_drop) < 5.0


def test_parallel_llama_cpp_loads_leave_stdout_working(tiny_llama, tmp_path, capfd):
    """Formats are evaluated in parallel threads; the process must keep its stdout."""
    from concurrent.futures import ThreadPoolExecutor

    windows = token_windows(tiny_llama.model_dir, tiny_llama.heldout_text, 2)
    f16 = convert_to_gguf(tiny_llama.model_dir, tmp_path / "f16.gguf")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: llama_cpp_logits(f16, windows), range(8)))
    import os

    os.write(1, b"still-visible\n")
    assert "still-visible" in capfd.readouterr().out
