"""AWQ 4-bit weights with 16-bit activations, made with vLLM's llm-compressor and loaded back
by transformers (compressed-tensors, pack-quantized). A miss escalates to a smaller group.

AutoAWQ is archived and pins an older torch, so the maintained implementation that installs
beside our torch is llm-compressor's AWQModifier.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from quantmill.atomic import atomic_dir
from quantmill.data import Dataset
from quantmill.formats.base import Format, Step
from quantmill.hardware import Hardware
from quantmill.models.base import Model
from quantmill.progress import Progress

GROUP_SIZES = (128, 64, 32)
SCHEMES = ("W4A16", "W4A16_ASYM")


@dataclass(frozen=True)
class AwqOptions:
    """AWQ's options, checked where they are made: the quantization group size, the
    llm-compressor preset scheme, and the modules left in full precision (lm_head, as AWQ
    recipes leave it)."""

    group_size: int = 128
    scheme: str = "W4A16_ASYM"
    ignore: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        if self.group_size not in GROUP_SIZES:
            raise ValueError(f"AWQ group_size {self.group_size} not in {GROUP_SIZES}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"AWQ scheme {self.scheme!r} not in {SCHEMES}")

    def describe(self) -> str:
        """Return e.g. 'W4A16_ASYM group 128'."""
        return f"{self.scheme} group {self.group_size}"


class Awq(Format):
    """AWQ W4A16, calibrated on the calibration text's token windows."""

    name = "awq-w4a16"
    description = "AWQ 4-bit weights, 16-bit activations"
    kinds = ("hf-causal-lm",)
    runtime = "transformers"
    calibrated = True

    def default_options(self, hardware: Hardware) -> AwqOptions:
        """Return group size 128, asymmetric."""
        return AwqOptions()

    def ladder(self, reason: str, hardware: Hardware) -> tuple[Step, ...]:
        """Return group size 128, then 64."""
        first = self.default_options(hardware)
        return (Step(self.name, first, f"candidate: {reason}"),
                Step(self.name, replace(first, group_size=64), "missed the budget; trying group size 64"))

    def quantize(self, model: Model, options: AwqOptions, calibration: Dataset | None, workdir: Path,
                 progress: Progress | None = None) -> Path:
        """Write the AWQ checkpoint folder (whole, via a staging folder) and return it.
        Raises ValueError without calibration data or when the group size does not divide a
        quantized layer's input columns; llm-compressor's errors pass through."""
        import torch
        from datasets import Dataset as HfDataset
        from llmcompressor import oneshot
        from llmcompressor.modifiers.awq import AWQModifier
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if calibration is None:
            raise ValueError("AWQ needs calibration data")
        windows = calibration.inputs["input_ids"]
        out_dir = self.output_path(model, options, calibration, workdir)
        rows = [{"input_ids": row.tolist(), "attention_mask": [1] * len(row)} for row in windows]
        loaded = AutoModelForCausalLM.from_pretrained(model.path, dtype=torch.float32, use_safetensors=True,
                                                      trust_remote_code=False)
        _check_groups(loaded, options)
        recipe = AWQModifier(ignore=list(options.ignore), config_groups={"group_0": _scheme(options)})
        layers = loaded.get_decoder().layers
        hooks = [] if progress is None else _layers_reached(layers, progress)
        try:
            with _without_pinning():
                oneshot(model=loaded, dataset=HfDataset.from_list(rows), recipe=[recipe],
                        max_seq_length=windows.shape[1], num_calibration_samples=len(rows))
        finally:
            for hook in hooks:
                hook.remove()
        if progress is not None:
            progress(len(layers), len(layers))
        with atomic_dir(out_dir) as staging:
            loaded.save_pretrained(staging, save_compressed=True)
            AutoTokenizer.from_pretrained(model.path, trust_remote_code=False).save_pretrained(staging)
        return out_dir


def _check_groups(model, options: AwqOptions) -> None:
    # llm-compressor finds this too, but only after loading its pipeline, and names neither
    # the columns nor the group sizes that would fit (SmolLM2's 576 columns take 64, not 128).
    import torch

    uneven = [(name, module.in_features) for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] not in options.ignore
              and module.in_features % options.group_size]
    if uneven:
        name, columns = uneven[0]
        fitting = [g for g in GROUP_SIZES if all(c % g == 0 for _, c in uneven)]
        raise ValueError(f"AWQ group size {options.group_size} does not divide the {columns} input columns of {name} "
                         f"({len(uneven)} layers); group sizes that do: {', '.join(map(str, fitting)) or 'none'}")


def _layers_reached(layers, progress: Progress) -> list:
    # llm-compressor calibrates and smooths one decoder layer after another (its sequential
    # pipeline) and reports only through its own log; the first call into each layer tells
    # how many are done.
    reached: set[int] = set()

    def first_call(index: int):
        def hook(module, args) -> None:
            if index not in reached:
                reached.add(index)
                progress(len(reached) - 1, len(layers))
        return hook

    return [layer.register_forward_pre_hook(first_call(i)) for i, layer in enumerate(layers)]


def _scheme(options: AwqOptions):
    # llm-compressor's presets fix the group size at 128; the preset's weight arguments with
    # the asked-for group size make the same scheme at another granularity.
    from compressed_tensors.quantization import QuantizationScheme, preset_name_to_scheme

    preset = preset_name_to_scheme(options.scheme, ["Linear"])
    weights = preset.weights.model_copy(update={"group_size": options.group_size})
    return QuantizationScheme(targets=["Linear"], weights=weights, input_activations=preset.input_activations)


@contextlib.contextmanager
def _without_pinning() -> Iterator[None]:
    # llm-compressor 0.14's AWQ pins its cached activations unconditionally to speed up
    # host-to-device copies; pinning needs an accelerator and raises on a CPU-only machine.
    # It is only an optimization, so it is skipped where there is nothing to copy to.
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


FORMATS = (Awq(),)
