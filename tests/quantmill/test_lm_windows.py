"""Language-model windows begin with BOS exactly where the model's tokenizer adds one, as
llama.cpp does; never with a stand-in for a BOS the model lacks."""

from __future__ import annotations

import shutil

from transformers import AutoTokenizer

from quantmill.models.hf_causal_lm import WINDOW, adds_bos, token_windows


def test_bos_only_where_the_tokenizer_adds_it(tiny_llama, tmp_path):
    with_bos = token_windows(tiny_llama.model_dir, tiny_llama.heldout_text, 4)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama.model_dir)
    assert adds_bos(tokenizer) and (with_bos[:, 0] == tokenizer.bos_token_id).all()
    assert with_bos.shape == (4, WINDOW + 1)

    # The same model, its tokenizer told not to add BOS (as Qwen2's does not).
    plain = tmp_path / "no-bos"
    shutil.copytree(tiny_llama.model_dir, plain)
    tokenizer.add_bos_token = False
    tokenizer.save_pretrained(plain)
    assert not adds_bos(AutoTokenizer.from_pretrained(plain))
    without = token_windows(plain, tiny_llama.heldout_text, 4)
    assert without.shape == (4, WINDOW + 1) and without.dtype == with_bos.dtype
    assert not (without[:, 0] == tokenizer.bos_token_id).any()
    # The same text, one token further along each window: nothing stands in for BOS.
    assert (without[0, :WINDOW] == with_bos[0, 1:]).all()
