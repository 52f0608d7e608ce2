"""torchao's formats and the torch-cuda runtime, as far as a machine without a GPU can take
them: the configurations torchao builds, the INT8 checkpoint's safetensors round trip and the
runtime's compiled static-cache decode on it (INT8 weight-only also runs on the CPU), the bytes
a token reads, and the reasons given where no GPU is."""

import numpy as np
import pytest
import torch

from quantmill.errors import FormatUnavailable
from quantmill.formats import baseline_for, baselines_for, get_format, offered
from quantmill.formats.torchao import TorchaoOptions, quantize_checkpoint
from quantmill.hardware import local_cpu
from quantmill.models import resolve_model
from quantmill.runtimes import get_runtime
from quantmill.runtimes.torch_cuda import bytes_per_token, load, measure
from quantmill.targets import get_target

pytest.importorskip("torchao", reason="make test runs this file with torchao on PYTHONPATH (.quantmill/torchao)")
RUNTIME = "torch-cuda"
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


def torchao_formats():
    return [f for f in offered("hf-causal-lm", get_target("gpu")) if f.runtime == RUNTIME]


def test_the_gpu_target_offers_torchao_measured_against_bf16_on_the_same_runtime():
    from torchao.core.config import AOBaseConfig

    formats = torchao_formats()
    assert len(formats) == 4
    assert not [f for f in offered("hf-causal-lm", get_target("cpu")) if f.runtime == RUNTIME]
    baselines = baselines_for("hf-causal-lm", [f.name for f in formats])
    assert {get_format(b).runtime for b in baselines.values()} == {RUNTIME}
    assert not get_format(next(iter(baselines.values()))).candidate
    for fmt in formats:
        assert isinstance(fmt.default_options(local_cpu("")).config(), AOBaseConfig)
    int4 = next(f for f in formats if f.default_options(local_cpu("")).group_size)
    assert [s.options.group_size for s in int4.ladder("r", local_cpu(""))] == [64, 32]


def test_options_are_checked_where_they_are_made():
    with pytest.raises(ValueError, match="group_size 48 not in"):
        TorchaoOptions("int4-wo", 48)
    with pytest.raises(ValueError, match="fp8-wo takes no group size"):
        TorchaoOptions("fp8-wo", 64)
    with pytest.raises(ValueError, match="scheme 'int3' not in"):
        TorchaoOptions("int3")


def test_int8_checkpoint_is_safetensors_that_loads_back_as_int8(tiny_llama, tmp_path):
    out = quantize_checkpoint(tiny_llama.model_dir, TorchaoOptions("int8-wo"), tmp_path / "int8", device="cpu")
    names = sorted(f.name for f in out.iterdir())
    assert "model.safetensors" in names and not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left

    quantized, full = load(out, "cpu"), load(tiny_llama.model_dir, "cpu")
    assert type(quantized.model.layers[0].mlp.down_proj.weight).__name__ == "Int8Tensor"
    # INT8 weights with a BF16 scale per row read a little over half the bytes of BF16; the
    # output layer stays BF16 (transformers leaves it unquantized), which keeps the ratio
    # above one half.
    linear = sum(m.weight.numel() for n, m in full.named_modules()
                 if isinstance(m, torch.nn.Linear) and n != "lm_head")
    saved = bytes_per_token(full) - bytes_per_token(quantized)
    assert linear * 0.95 < saved < linear
    text = tiny_llama.heldout_text.read_text()[:2000]
    ids = torch.tensor(load_tokenizer(tiny_llama.model_dir)(text)["input_ids"][:128])[None]
    with torch.inference_mode():
        agree = np.mean((quantized(input_ids=ids).logits.argmax(-1) == full(input_ids=ids).logits.argmax(-1)).numpy())
    assert agree > 0.9

    # The runtime's benchmark path: a static KV cache and the decode step compiled whole
    # (fullgraph, so a graph break in transformers' forward would fail here), on the CPU.
    measured = measure(out, 16, 8, device="cpu")
    assert measured["decode_tokens_per_s"] > 0 and measured["prompt_tokens_per_s"] > 0
    assert measured["bytes_per_token"] == bytes_per_token(quantized)


def load_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@no_gpu
def test_without_a_gpu_torchao_is_unavailable_and_says_why(tiny_llama, tmp_path):
    runtime = get_runtime(RUNTIME)
    assert runtime.unavailable(get_target("cpu")) == "target 'cpu' does not offer torch-cuda"
    assert "finds no CUDA device" in runtime.unavailable(get_target("gpu"))
    model = resolve_model(str(tiny_llama.model_dir), "language-modeling", tmp_path / "resolve")
    int4 = next(f for f in torchao_formats() if f.default_options(local_cpu("")).group_size)
    with pytest.raises(FormatUnavailable, match="need a CUDA device"):
        int4.quantize(model, int4.default_options(local_cpu("")), None, tmp_path / "work")
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").iterdir())


def test_the_shipped_gpu_table_steps_aside_what_lost_to_bf16():
    from quantmill.benchmark_table import SHIPPED_TABLE_DIR, load_table
    from quantmill.formats import select_formats

    table = load_table(SHIPPED_TABLE_DIR)
    aside = {r.format: r.unavailable for r in table if r.hardware == "gpu" and r.unavailable}
    torchao = {f.name for f in torchao_formats()} - {baseline_for("hf-causal-lm", RUNTIME).name}
    assert set(aside) >= torchao and all("slower" in aside[name] and "x (95% CI" in aside[name] for name in torchao)
    chosen = [c.format for c in select_formats("hf-causal-lm", "decoder-lm", get_target("gpu"), 5.0,
                                               "% perplexity increase", table)]
    assert chosen and not set(chosen) & torchao
