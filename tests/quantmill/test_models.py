import onnx
import pytest

from quantmill.errors import InputError
from quantmill.models import register_source_model, resolve_model
from quantmill.tracking.client import client


def test_registry_uri_by_version_and_alias_resolves_to_the_same_weights(digits, tmp_path):
    version = register_source_model(digits.model, "digits-cnn")
    assert register_source_model(digits.model, "digits-cnn") == version, "same weights register once"
    client().set_registered_model_alias("digits-cnn", "production", version)

    by_version = resolve_model(f"models:/digits-cnn/{version}", "classification", tmp_path)
    by_alias = resolve_model("models:/digits-cnn@production", "classification", tmp_path)
    assert (by_alias.name, by_alias.version) == ("digits-cnn", version)
    assert by_alias.sha256 == by_version.sha256
    # MLflow stores the weights beside the graph; the resolved model holds them inline.
    original = {i.name: i.raw_data for i in onnx.load(str(digits.model)).graph.initializer}
    resolved = {i.name: i.raw_data for i in onnx.load(str(by_alias.path)).graph.initializer}
    assert resolved == original


def test_unknown_registry_model_is_named(tmp_path):
    with pytest.raises(InputError, match=r"^models:/nope/3: not in the MLflow registry"):
        resolve_model("models:/nope/3", "classification", tmp_path)


def test_pickled_weights_are_refused(tmp_path):
    model_dir = tmp_path / "encoder"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(InputError, match="no safetensors weights .found pytorch_model.bin: pickles are never loaded"):
        resolve_model(str(model_dir), "embedding", tmp_path / "work")


def test_registering_writes_nothing_outside_the_state_folder(digits, tmp_path, monkeypatch):
    """MLflow logs ONNX with its weights in a side file by default, and a local store
    without an artifact location falls back to ./mlruns: neither may land in the cwd."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    register_source_model(digits.model, "digits-cnn")
    assert list(work.iterdir()) == []
