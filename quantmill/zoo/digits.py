"""A small CNN trained here on scikit-learn's digits, exported to ONNX, with its
calibration and evaluation sets: the classification model of the demo and the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from quantmill.zoo.onnx_export import INPUT, export_classifier, save_npz


@dataclass(frozen=True)
class DigitsFiles:
    """Paths of the exported model and its data sets, and the held-out FP32 accuracy (%)."""

    model: Path
    calibration: Path
    evaluation: Path
    accuracy: float


class _Net(torch.nn.Module):
    # Wide enough (245k parameters) that convolution work, not per-call overhead, dominates
    # inference: the regime where INT8 kernels can pay off.
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(width, 2 * width, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(2 * width * 4, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
        )

    def forward(self, pixels):
        return self.head(self.features(pixels))


def build_digits(directory: Path, seed: int = 0, epochs: int = 30) -> DigitsFiles:
    """Train the CNN (seeded) and write model.onnx, calibration.npz and evaluation.npz to
    directory; reuse them when already there. Returns their paths and the held-out accuracy."""
    directory.mkdir(parents=True, exist_ok=True)
    files = DigitsFiles(directory / "digits_cnn.onnx", directory / "calibration.npz", directory / "evaluation.npz", 0.0)
    digits = load_digits()
    pixels = (digits.images / 16.0).astype(np.float32)[:, None]
    train_x, eval_x, train_y, eval_y = train_test_split(
        pixels, digits.target, test_size=0.3, random_state=seed, stratify=digits.target
    )
    if not files.model.exists():
        torch.manual_seed(seed)
        net = _train(_Net(), train_x, train_y, epochs)
        export_classifier(net, (1, 1, 8, 8), files.model)
        rng = np.random.default_rng(seed)
        calib = rng.choice(len(train_x), 256, replace=False)
        save_npz(files.calibration, {INPUT: train_x[calib], "labels": train_y[calib]})
        save_npz(files.evaluation, {INPUT: eval_x, "labels": eval_y})
    import onnxruntime as ort

    logits = ort.InferenceSession(str(files.model), providers=["CPUExecutionProvider"]).run(None, {INPUT: eval_x})[0]
    accuracy = 100.0 * float(np.mean(logits.argmax(1) == eval_y))
    return DigitsFiles(files.model, files.calibration, files.evaluation, accuracy)


def _train(net: _Net, x: np.ndarray, y: np.ndarray, epochs: int) -> _Net:
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    for _ in range(epochs):
        for batch_x, batch_y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(batch_x), batch_y).backward()
            optimizer.step()
    return net.eval()
