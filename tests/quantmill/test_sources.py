import onnx
import pytest

from quantmill.errors import InputError
from quantmill.sources import resolve_model
from quantmill.tracking import client, register_source_model


def test_registry_uri_by_version_and_alias_resolves_to_the_same_weights(digits, tmp_path):
    version = register_source_model(digits.model, "digits-cnn")
    assert register_source_model(digits.model, "digits-cnn") == version, "same weights register once"
    client().set_registered_model_alias("digits-cnn", "production", version)

    by_version = resolve_model(f"models:/digits-cnn/{version}", tmp_path)
    by_alias = resolve_model("models:/digits-cnn@production", tmp_path)
    assert (by_alias.name, by_alias.version) == ("digits-cnn", version)
    assert by_alias.sha256 == by_version.sha256
    # MLflow stores the weights beside the graph; the resolved model holds them inline.
    original = {i.name: i.raw_data for i in onnx.load(str(digits.model)).graph.initializer}
    resolved = {i.name: i.raw_data for i in onnx.load(str(by_alias.onnx_path)).graph.initializer}
    assert resolved == original


def test_unknown_registry_model_is_named(tmp_path):
    with pytest.raises(InputError, match=r"^models:/nope/3: not in the MLflow registry"):
        resolve_model("models:/nope/3", tmp_path)


def test_pickled_weights_are_refused(tmp_path):
    model_dir = tmp_path / "encoder"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(InputError, match="no safetensors weights .found pytorch_model.bin: pickles are never loaded"):
        resolve_model(str(model_dir), tmp_path / "work")
