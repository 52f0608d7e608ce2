"""What the zoo's image classifiers share: a PyTorch module exported to ONNX with a batch
axis, and data sets written as .npz archives, each moved into place whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from quantmill.atomic import atomic_file

INPUT = "pixels"


def export_classifier(net: torch.nn.Module, example_shape: tuple[int, ...], path: Path) -> None:
    """Write net (in eval mode) to path as ONNX opset 17: input INPUT, output `logits`, the
    first axis of both a free batch size."""
    with torch.no_grad(), atomic_file(path) as tmp:
        torch.onnx.export(
            net, (torch.zeros(*example_shape),), str(tmp), dynamo=False, opset_version=17,
            input_names=[INPUT], output_names=["logits"],
            dynamic_axes={INPUT: {0: "batch"}, "logits": {0: "batch"}},
        )


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to the .npz at path."""
    with atomic_file(path) as tmp:
        np.savez(tmp, **arrays)
