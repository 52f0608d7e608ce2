"""quantmill's figures for a GGUF agree with llama.cpp's own `llama-perplexity
--kl-divergence` on the same file and text: SmolLM2 at Q4_K_M on English prose, scored on
llama-perplexity's chunks and positions."""

from __future__ import annotations

from quantmill.formats import baseline_for, get_format
from quantmill.formats.base import NoOptions
from quantmill.formats.gguf import GgufOptions
from quantmill.llama_perplexity import kl_divergence, write_base
from quantmill.metrics import compare_logits
from quantmill.models import resolve_model
from quantmill.runtimes import get_runtime
from quantmill.zoo.smollm2 import smollm2_files

N_CTX, CHUNKS = 256, 12


def test_quantmills_kl_divergence_agrees_with_llama_perplexity_within_2_percent(tmp_path):
    files = smollm2_files(tmp_path / "prose")
    model = resolve_model(str(files.gguf), "language-modeling", tmp_path / "work")
    f16 = baseline_for(model.kind).quantize(model, NoOptions(), None, tmp_path / "work")
    q4 = get_format("gguf-q4_k_m").quantize(model, GgufOptions("Q4_K_M"), None, tmp_path / "work")

    # llama.cpp's base is the F16 GGUF, quantmill's the float32 PyTorch reference: they
    # differ by a KL divergence below 1e-4 (test_gguf_input), far under Q4_K_M's.
    base = write_base(f16, files.heldout_text, N_CTX, CHUNKS, tmp_path / "base.kld")
    theirs = kl_divergence(q4, base)
    windows = base.chunks
    ours = compare_logits(get_runtime("transformers").log_probs(model.path, windows),
                          get_runtime("llama.cpp").log_probs(q4, windows), windows, context=base.context)

    figures = ours.secondary
    assert figures["tokens"] == CHUNKS * (N_CTX - 1 - N_CTX // 2)
    assert abs(figures["mean_kl"] / theirs.mean_kld - 1) < 0.02, (figures["mean_kl"], theirs)
    assert abs(figures["median_kl"] / theirs.median_kld - 1) < 0.05, (figures["median_kl"], theirs)
    assert abs(figures["top1_agreement"] - theirs.same_top) < 1.0, (figures["top1_agreement"], theirs)
    assert abs(ours.quantized_metric / theirs.perplexity - 1) < 0.01, (ours.quantized_metric, theirs)
    # The check can fail: a different file gives a different divergence.
    q8 = get_format("gguf-q8_0").quantize(model, GgufOptions("Q8_0"), None, tmp_path / "work")
    assert kl_divergence(q8, base).mean_kld < 0.5 * theirs.mean_kld
