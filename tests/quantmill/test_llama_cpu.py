"""llama.cpp on the CPU it finds: every GGUF type quantmill offers evaluates a batch of more
than 128 tokens (the case that segfaulted in ggml's AMX kernels, llama.cpp #20824), with the
CPU buffer types chosen from this CPU's features."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from quantmill.formats import baseline_for, get_format
from quantmill.formats.base import NoOptions
from quantmill.formats.gguf import FTYPES, GgufOptions
from quantmill.hardware import local_cpu
from quantmill.isolation import WorkerCrashed
from quantmill.llama_buffers import after_crash, repack_weights
from quantmill.metrics import compare_logits
from quantmill.models import resolve_model
from quantmill.models.hf_causal_lm import text_dataset
from quantmill.runtimes import get_runtime
from quantmill.targets import HOST

WINDOW = 160


def test_extra_buffers_stay_on_until_they_crash_on_an_amx_cpu(monkeypatch):
    from quantmill import llama_buffers

    monkeypatch.setattr(llama_buffers, "_REPACK_CRASHED", threading.Event())
    amx, avx2 = ("avx2", "avx512f", "avx512_vnni", "amx_int8"), ("avx2",)
    assert repack_weights(amx) and repack_weights(avx2), "llama.cpp's default, the fastest where correct"
    assert not after_crash(avx2), "a crash elsewhere is not the AMX buffers' doing: no retry"
    assert after_crash(amx) and not repack_weights(amx), "on an AMX CPU: once more without them, and off from then on"
    assert not after_crash(amx), "a second crash without them is a crash"
    assert repack_weights(avx2)


@pytest.fixture(scope="module")
def llama_model(tiny_llama, tmp_path_factory):
    return resolve_model(str(tiny_llama.model_dir), "language-modeling", tmp_path_factory.mktemp("work"))


def test_every_gguf_type_evaluates_a_long_batch_on_this_cpu(tiny_llama, llama_model, tmp_path):
    # Windows of 160 tokens: llama.cpp evaluates the first 159 as one batch.
    windows = text_dataset(llama_model.path, tiny_llama.heldout_text, 2).inputs["input_ids"]
    windows = np.concatenate([windows, windows], axis=1)[:, :WINDOW]
    assert windows.shape[1] - 1 >= 128
    llama = get_runtime("llama.cpp")
    f16 = llama.logits(baseline_for("hf-causal-lm").quantize(llama_model, NoOptions(), None, tmp_path), windows)
    cpu = local_cpu("llama.cpp")
    for scheme in FTYPES:
        path = get_format(f"gguf-{scheme.lower()}").quantize(llama_model, GgufOptions(scheme), None, tmp_path)
        logits = llama.logits(path, windows)
        assert logits.shape == f16.shape and np.isfinite(logits).all(), (scheme, cpu.describe())
        agreement = compare_logits(f16, logits, windows).secondary["top1_agreement"]
        assert agreement > 80.0, f"{scheme} on {cpu.identity()}: top-1 agreement with F16 {agreement:.1f} %"


def test_gguf_speed_is_timed_by_llama_bench_a_process_per_model_and_round(llama_model, tmp_path):
    f16 = baseline_for("hf-causal-lm").quantize(llama_model, NoOptions(), None, tmp_path)
    q8 = get_format("gguf-q8_0").quantize(llama_model, GgufOptions("Q8_0"), None, tmp_path)
    broken = tmp_path / "truncated.gguf"
    broken.write_bytes(q8.read_bytes()[: q8.stat().st_size // 3])
    llama = get_runtime("llama.cpp")
    assert "llama-bench" in llama.describe(HOST) and "timed in C++" in llama.describe(HOST)
    # llama-bench decodes its own tokens: the benchmark reads no data.
    measured = llama.benchmark({"f16": f16, "q8": q8, "broken": broken}, None, HOST, 1.0, pair=("q8", "f16"))
    for label, path in (("f16", f16), ("q8", q8)):
        bench = measured[label]
        assert len(bench.decode_rounds) >= 3 and min(bench.decode_rounds) > 0, bench
        assert bench.prompt_tokens_per_s > bench.decode_tokens_per_s > 0
        assert 0 < bench.load_ms < 60_000 and bench.peak_rss_bytes > path.stat().st_size
        assert bench.fraction_of_bound > 0, bench
    # A file llama-bench cannot load fails its own measurement, in llama-bench's words; the others go on.
    assert isinstance(measured["broken"], WorkerCrashed) and "failed to load model" in str(measured["broken"])
