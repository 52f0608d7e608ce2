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
    # The download is readable like any other (mkdtemp's 0700 does not survive the move).
    assert {d.stat().st_mode & 0o777 for d in (tmp_path / "registry").iterdir()} == {0o755}


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


def _pooling_layout(folder, **modes):
    import json

    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 8, **modes}))
    return folder


def test_pooling_is_read_as_sentence_transformers_writes_it_and_keys_the_export(tmp_path):
    from quantmill.models.encoder_export import export_key, read_pooling

    cls = _pooling_layout(tmp_path / "cls", pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    mean = _pooling_layout(tmp_path / "mean", pooling_mode_cls_token=False, pooling_mode_mean_tokens=True)
    assert read_pooling(cls) == ("cls", False) and read_pooling(mean) == ("mean", False)
    # The same weights exported with another pooling are another graph, not the cached one.
    assert export_key(cls, "same weights") != export_key(mean, "same weights")
    with pytest.raises(InputError, match="pooling mode 'pooling_mode_max_tokens' is not supported"):
        read_pooling(_pooling_layout(tmp_path / "max", pooling_mode_max_tokens=True))
