"""torchao's quantization of a causal LM for PyTorch on NVIDIA GPUs, in the four configurations
of torchao's published Llama table: INT4 weight-only (tinygemm's tile-packed layout), INT8
weight-only, FP8 weight-only and FP8 dynamic activations with FP8 weights, both FP8 per row.

One class registered once per configuration. torchao's own config objects are applied by
transformers (TorchAoConfig) while the checkpoint loads onto the GPU, and transformers saves
the result as safetensors, torchao's tensors flattened by torchao's safetensors support, which
transformers loads back without pickle. Quantizing runs on the GPU, in the torch-cuda
runtime's worker process: INT4's packing and FP8's scaling are CUDA kernels, and a crash
there fails the attempt, not the run. A miss escalates INT4 to a smaller group.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from quantmill.atomic import atomic_dir
from quantmill.data import Dataset
from quantmill.errors import FormatUnavailable
from quantmill.formats.base import AsGiven, Format, Step
from quantmill.hardware import Hardware
from quantmill.isolation import in_worker
from quantmill.models.base import Model
from quantmill.progress import Progress

# The group sizes tinygemm's INT4 kernel takes; 64 is torchao's published configuration.
INT4_GROUP_SIZES = (128, 64, 32)


@dataclass(frozen=True)
class TorchaoOptions:
    """A torchao configuration, checked where it is made: the scheme (int4-wo, int8-wo,
    fp8-wo, fp8-dq) and, for INT4 only, the quantization group size."""

    scheme: str
    group_size: int | None = None

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"torchao scheme {self.scheme!r} not in {tuple(SCHEMES)}")
        if self.scheme == "int4-wo" and self.group_size not in INT4_GROUP_SIZES:
            raise ValueError(f"torchao INT4 group_size {self.group_size} not in {INT4_GROUP_SIZES}")
        if self.scheme != "int4-wo" and self.group_size is not None:
            raise ValueError(f"torchao {self.scheme} takes no group size (got {self.group_size})")

    def describe(self) -> str:
        """Return e.g. 'group 64' (INT4), else ''."""
        return "" if self.group_size is None else f"group {self.group_size}"

    def config(self):
        """Return torchao's config object for these options."""
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Float8WeightOnlyConfig,
            Int4WeightOnlyConfig,
            Int8WeightOnlyConfig,
            PerRow,
        )

        if self.scheme == "int4-wo":
            return Int4WeightOnlyConfig(group_size=self.group_size, int4_packing_format="tile_packed_to_4d")
        if self.scheme == "int8-wo":
            return Int8WeightOnlyConfig(granularity=PerRow())
        if self.scheme == "fp8-wo":
            return Float8WeightOnlyConfig(granularity=PerRow())
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())


SCHEMES = {
    "int4-wo": "torchao INT4 weights (group-wise, tinygemm tile-packed), BF16 activations",
    "int8-wo": "torchao INT8 weights (per row), BF16 activations",
    "fp8-wo": "torchao FP8 (e4m3) weights (per row), BF16 activations",
    "fp8-dq": "torchao FP8 (e4m3) weights and dynamically quantized FP8 activations, per row",
}


class Torchao(Format):
    """One torchao configuration, quantized on the GPU and run by PyTorch there."""

    kinds = ("hf-causal-lm",)
    runtime = "torch-cuda"

    def __init__(self, scheme: str):
        self.scheme = scheme
        self.name = f"torchao-{scheme}"
        self.description = SCHEMES[scheme]

    def default_options(self, hardware: Hardware) -> TorchaoOptions:
        """Return torchao's published configuration: INT4 in groups of 64, the others per row."""
        return TorchaoOptions(self.scheme, 64 if self.scheme == "int4-wo" else None)

    def ladder(self, reason: str, hardware: Hardware) -> tuple[Step, ...]:
        """Return the published configuration, then, for INT4, groups of 32."""
        first = self.default_options(hardware)
        steps = (Step(self.name, first, f"candidate: {reason}"),)
        if self.scheme == "int4-wo":
            steps += (Step(self.name, replace(first, group_size=32), "missed the budget; trying group size 32"),)
        return steps

    def quantize(self, model: Model, options: TorchaoOptions, calibration: Dataset | None, workdir: Path,
                 progress: Progress | None = None) -> Path:
        """Write the torchao-quantized checkpoint folder (whole, via a staging folder) and
        return it. Raises FormatUnavailable where PyTorch finds no CUDA device or torchao is
        missing; transformers' and torchao's errors pass through (a crash of the worker
        process as WorkerCrashed)."""
        out_dir = self.output_path(model, options, calibration, workdir)
        return in_worker(self.runtime, f"torchao quantizing {model.name} to {self.name}", quantize_checkpoint,
                         model.path, options, out_dir)


def quantize_checkpoint(model_dir: Path, options: TorchaoOptions, out_dir: Path, device: str = "cuda") -> Path:
    """Load the safetensors causal LM in model_dir onto device (the GPU; INT8 also runs on the
    CPU) in BF16, quantized by torchao as options say, and save it with its tokenizer to
    out_dir (atomically); return out_dir. Raises FormatUnavailable without torchao, or
    without a CUDA device where device is one."""
    import importlib.util

    import torch

    if importlib.util.find_spec("torchao") is None:
        raise FormatUnavailable("torchao is not installed")
    if device == "cuda" and not torch.cuda.is_available():
        raise FormatUnavailable(f"torchao's kernels need a CUDA device; PyTorch {torch.__version__} finds none")
    from transformers import AutoModelForCausalLM, AutoTokenizer, TorchAoConfig

    loaded = AutoModelForCausalLM.from_pretrained(
        model_dir, use_safetensors=True, trust_remote_code=False, dtype=torch.bfloat16, device_map=device,
        quantization_config=TorchAoConfig(quant_type=options.config()))
    with atomic_dir(out_dir) as staging:
        loaded.save_pretrained(staging)
        AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False).save_pretrained(staging)
    return out_dir


class Bf16OnGpu(AsGiven):
    """The checkpoint as it came, run in BF16 on the GPU: what torchao's formats are measured
    against, on the same runtime."""

    name = "hf-checkpoint-bf16-cuda"
    description = "the Hugging Face checkpoint in BF16 on the GPU (the baseline on torch-cuda)"
    kinds = ("hf-causal-lm",)
    runtime = "torch-cuda"


FORMATS = (*(Torchao(scheme) for scheme in SCHEMES), Bf16OnGpu())
