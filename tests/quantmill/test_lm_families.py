"""Llama, Qwen2 and Gemma 3 as quantmill evaluates them: windows start with BOS exactly when
the tokenizer (and so llama.cpp) adds one, llama.cpp's F16 GGUF matches the float32 PyTorch
reference on held-out text (mean KLD below 1e-4), and a Q8_0 file's KLD on the gate's two
halves agrees within the choosing half's interval.

The models are random-weight configs of each architecture with the tiny Llama's tokenizer,
their weights scaled so that the next-token distributions are far from uniform (a near-uniform
model agrees with anything)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from quantmill.formats import baseline_for, get_format
from quantmill.formats.base import NoOptions
from quantmill.formats.gguf import GgufOptions
from quantmill.metrics import compare_logits, get_metric
from quantmill.models import resolve_model
from quantmill.models.hf_causal_lm import text_dataset
from quantmill.runtimes import get_runtime

SHAPE = {"vocab_size": 4096, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
         "bos_token_id": 1, "eos_token_id": 2}
# Gemma 3 scales its embeddings by sqrt(hidden), so smaller weights give as peaked a model.
# llama.cpp scales Gemma 3's queries by 1/sqrt(head_dim) (but for the 27B), as the released
# models' query_pre_attn_scalar does: the config states it.
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"initializer_range": 0.15, "tie_word_embeddings": False}, True),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"initializer_range": 0.15, "tie_word_embeddings": False}, False),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               {"initializer_range": 0.08, "head_dim": 64, "query_pre_attn_scalar": 64, "pad_token_id": 0}, True),
}


def _family_model(name: str, tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    import torch
    import transformers

    config_class, model_class, settings, adds_bos = FAMILIES[name]
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**SHAPE, **settings))
    model.save_pretrained(out, safe_serialization=True)
    shutil.copy(tokenizer_dir / "tokenizer.model", out / "tokenizer.model")
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": adds_bos}))
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_matches_llama_cpp_from_tokens_to_kld(family, tiny_llama, tmp_path):
    from llama_cpp import Llama

    transformers, llama_cpp = get_runtime("transformers"), get_runtime("llama.cpp")
    model = resolve_model(str(_family_model(family, tiny_llama.model_dir, tmp_path / family)), "language-modeling",
                          tmp_path / "work")
    heldout = text_dataset(model.path, tiny_llama.heldout_text, 16)
    windows = heldout.inputs["input_ids"]
    f16 = baseline_for(model.kind).quantize(model, NoOptions(), None, tmp_path / "work")

    vocab = Llama(str(f16), vocab_only=True, verbose=False)
    llama_cpp_adds_bos = vocab.tokenize(b"text", add_bos=True)[:1] == [vocab.token_bos()]
    del vocab
    assert bool((windows[:, 0] == SHAPE["bos_token_id"]).all()) is FAMILIES[family][3] is llama_cpp_adds_bos

    reference = transformers.log_probs(model.path, windows)
    entropy = -float(np.mean(np.sum(np.exp(reference.window(0)) * reference.window(0), axis=-1)))
    assert entropy < 0.75 * np.log(SHAPE["vocab_size"]), "the model is too near uniform to tell anything apart"
    f16_result = compare_logits(reference, llama_cpp.log_probs(f16, windows), windows)
    assert f16_result.secondary["mean_kl"] < 1e-4, f16_result.secondary
    other = _family_model(family, tiny_llama.model_dir, tmp_path / "other", seed=1)
    assert compare_logits(reference, transformers.log_probs(other, windows), windows).secondary["mean_kl"] > 1e-2

    q8 = get_format("gguf-q8_0").quantize(model, GgufOptions("Q8_0"), None, tmp_path / "work")
    chosen = get_metric("language-modeling").evaluate_model(reference, llama_cpp.outputs, q8, heldout)
    low, high = chosen.secondary["mean_kl_ci_low"], chosen.secondary["mean_kl_ci_high"]
    assert low <= chosen.confirmed.secondary["mean_kl"] <= high, (chosen.secondary, chosen.confirmed.secondary)


@pytest.mark.parametrize(("family", "change", "problem"), [
    ("llama", {"architectures": ["MadeUpForCausalLM"], "auto_map": {"AutoModelForCausalLM": "x.MadeUpForCausalLM"}},
     "architecture MadeUpForCausalLM: transformers"),
    ("gemma3", {"query_pre_attn_scalar": 256}, "architecture Gemma3ForCausalLM with query_pre_attn_scalar 256: "
                                               "llama.cpp scales attention by 1/sqrt(64)"),
], ids=["unknown-architecture", "gemma3-attention-scale"])
def test_an_architecture_quantmill_cannot_carry_is_refused_in_one_line(tiny_llama, tmp_path, family, change, problem):
    from quantmill.errors import InputError

    folder = _family_model(family, tiny_llama.model_dir, tmp_path / family)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(InputError) as refused:
        resolve_model(str(folder), "language-modeling", tmp_path / "work")
    assert str(refused.value).startswith(f"{folder / 'config.json'}: {problem}") and "\n" not in str(refused.value)
