"""A model given as a GGUF file: dequantized for the PyTorch reference, tokenized and made
F16 by llama.cpp from the GGUF itself, so that the F16 GGUF and the reference agree; a file
that only looks like a GGUF is refused naming it."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFReader

from quantmill.errors import InputError
from quantmill.formats import baseline_for, get_format
from quantmill.formats.base import NoOptions
from quantmill.formats.gguf import GgufOptions
from quantmill.metrics import compare_logits
from quantmill.models import resolve_model
from quantmill.models.gguf_input import source_record
from quantmill.models.hf_causal_lm import text_dataset
from quantmill.runtimes import get_runtime
from quantmill.runtimes.llama_cpp import bytes_per_token


def test_a_gguf_file_is_a_model_whose_f16_matches_its_reference(tiny_llama, tmp_path):
    from llama_cpp import Llama

    source = resolve_model(str(tiny_llama.model_dir), "language-modeling", tmp_path / "source")
    q8 = get_format("gguf-q8_0").quantize(source, GgufOptions("Q8_0"), None, tmp_path / "source")

    model = resolve_model(str(q8), "language-modeling", tmp_path / "work")
    assert model.kind == "hf-causal-lm" and model.uri == str(q8)
    assert source_record(model.path)["file_type"] == "Q8_0"
    assert resolve_model(str(q8), "language-modeling", tmp_path / "work").path == model.path, "dequantized once"

    heldout = text_dataset(model.path, tiny_llama.heldout_text, 8)
    windows = heldout.inputs["input_ids"]
    vocab = Llama(str(q8), vocab_only=True, verbose=False)
    text = tiny_llama.heldout_text.read_text(encoding="utf-8")
    expected = [vocab.token_bos(), *vocab.tokenize(text[:4000].encode(), add_bos=False)[:windows.shape[1] - 1]]
    del vocab
    assert windows[0].tolist() == expected, "windows are the GGUF's own tokens"

    f16 = baseline_for(model.kind).quantize(model, NoOptions(), None, tmp_path / "work")
    reference = get_runtime("transformers").log_probs(model.path, windows)
    result = compare_logits(reference, get_runtime("llama.cpp").log_probs(f16, windows), windows)
    assert result.secondary["mean_kl"] < 1e-4 and result.secondary["top1_agreement"] > 99.0, result.secondary
    # Dequantized from Q8_0: the reference is Q8_0's grid, not the original weights.
    original = get_runtime("transformers").log_probs(source.path, windows)
    assert compare_logits(original, reference, windows).secondary["mean_kl"] > 1e-7


def test_a_file_that_only_looks_like_a_gguf_is_refused(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF" + np.zeros(64, np.uint8).tobytes())
    with pytest.raises(InputError) as raised:
        resolve_model(str(fake), "language-modeling", tmp_path / "work")
    assert str(raised.value).startswith(f"{fake}: transformers cannot read this GGUF")


def test_smollm2_from_its_package_gguf_reads_english_prose_as_llama_cpp_does(tmp_path):
    from quantmill.zoo.smollm2 import smollm2_files

    files = smollm2_files(tmp_path / "prose")
    model = resolve_model(str(files.gguf), "language-modeling", tmp_path / "work")
    assert source_record(model.path)["file_type"] == "Q4_1" and 130e6 < model.parameters < 140e6
    # The report names what the reference is: not the original weights, which were Q4_1's.
    assert model.architecture == "LlamaForCausalLM"
    assert model.reference == "fp16 dequantized from SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1 weights), run in float32"
    windows = text_dataset(model.path, files.heldout_text, 8).inputs["input_ids"]
    f16 = baseline_for(model.kind).quantize(model, NoOptions(), None, tmp_path / "work")
    result = compare_logits(get_runtime("transformers").log_probs(model.path, windows),
                            get_runtime("llama.cpp").log_probs(f16, windows), windows)
    # A real model reads real prose: far below the 49,152-token vocabulary's uniform perplexity.
    assert result.baseline_metric < 60, result.baseline_metric
    assert result.secondary["mean_kl"] < 1e-4 and abs(result.accuracy_drop) < 0.1, result.secondary
    # SmolLM2's output layer is its embedding table (no output.weight): a decoded token reads
    # the whole table, so the bandwidth bound counts every byte of the file's tensors.
    tensors = GGUFReader(str(f16)).tensors
    assert "output.weight" not in {t.name for t in tensors}
    assert bytes_per_token(f16) == sum(int(t.n_bytes) for t in tensors)
