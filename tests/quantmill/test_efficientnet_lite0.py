"""EfficientNet-Lite0 from its packages: the pretrained ImageNet classifier names what real
photographs show, and quantmill scores its quantized forms on photographs without ImageNet
labels by top-1 agreement with FP32 and the KL divergence of the class distribution."""

from __future__ import annotations

import numpy as np

from quantmill.formats import get_format
from quantmill.formats.base import NoOptions
from quantmill.formats.onnx import OnnxStaticOptions
from quantmill.metrics import get_metric
from quantmill.models import get_kind, resolve_model
from quantmill.runtimes import get_runtime
from quantmill.zoo.efficientnet_lite0 import CROPS_PER_PHOTO, INPUT, crops, photo_path

# ImageNet-1k classes: tabby, tiger cat, Persian, Siamese, Egyptian cat; espresso; moped,
# motor scooter.
CATS, ESPRESSO, SCOOTERS = set(range(281, 286)), {967}, {665, 670}


def test_the_pretrained_classifier_names_what_the_photographs_show(efficientnet_lite0):
    import onnxruntime as ort

    session = ort.InferenceSession(str(efficientnet_lite0.model), providers=["CPUExecutionProvider"])
    for name, classes in (("skimage:chelsea.png", CATS), ("skimage:coffee.png", ESPRESSO),
                          ("skimage:motorcycle_left.png", SCOOTERS)):
        centre = crops(photo_path(name))[:1]
        assert int(session.run(None, {INPUT: centre})[0].argmax()) in classes, name


def test_quantized_forms_are_scored_by_agreement_and_kl_without_labels(efficientnet_lite0, tmp_path):
    model = resolve_model(str(efficientnet_lite0.model), "classification", tmp_path)
    assert model.reference == "the FP32 ONNX graph on ONNX Runtime" and 4.5e6 < model.parameters < 4.8e6
    assert model.family == "depthwise-cnn", "its rows must not speak for dense CNNs"
    kind, onnxruntime = get_kind(model.kind), get_runtime("onnxruntime")
    # Every sixth crop of every photo: 80 to evaluate, 32 to calibrate.
    evaluation = kind.load_data(model, efficientnet_lite0.evaluation).take(np.arange(0, 12 * CROPS_PER_PHOTO, 6))
    calibration = kind.load_data(model, efficientnet_lite0.calibration).take(np.arange(0, 4 * CROPS_PER_PHOTO, 5))
    assert evaluation.labels is None
    reference = onnxruntime.outputs(model.path, evaluation)
    metric = get_metric("classification")
    metric.check(evaluation, classes=1000)

    def scored(name: str, options: object):
        path = get_format(name).quantize(model, options, calibration, tmp_path)
        return metric.evaluate(reference, onnxruntime.outputs(path, evaluation), evaluation)

    fp16, int8 = scored("onnx-fp16", NoOptions()), scored("onnx-int8-static", OnnxStaticOptions())
    for result in (fp16, int8):
        assert result.metric_name == "top1_agreement" and result.baseline_metric == 100.0
        assert result.quantized_metric == result.secondary["prediction_agreement"] == 100.0 - result.accuracy_drop
        assert result.confirmed is not None and result.confirmed.samples == result.samples == 40
    assert fp16.quantized_metric >= 95.0 and fp16.secondary["mean_kl"] < 1e-3, fp16.secondary
    assert int8.secondary["mean_kl"] > 10 * fp16.secondary["mean_kl"], (int8.secondary, fp16.secondary)
