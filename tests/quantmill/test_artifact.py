import json
import stat

from quantmill.exporters.artifact import export_artifact


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_published_artifacts_are_whole_and_readable_by_other_workers(tmp_path):
    model = tmp_path / "quantized.bin"
    model.write_bytes(b"weights" * 100)
    first = export_artifact(model, (model,), tmp_path / "published", {"format": "test"})
    model.write_bytes(b"other weights" * 100)
    second = export_artifact(model, (model,), tmp_path / "published", {"format": "test"})
    assert first.sha256 != second.sha256 and second.path.read_bytes() == model.read_bytes()
    assert json.loads((second.directory / "metadata.json").read_text())["sha256"] == second.sha256
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no staging folder left behind"
    assert _mode(second.directory) == 0o755
    assert {_mode(p) for p in second.directory.iterdir()} == {0o644}


def test_an_artifact_changed_after_its_report_is_not_published(tmp_path):
    import pytest

    from quantmill.exporters.artifact import ArtifactChanged, verify_artifact

    model = tmp_path / "m.bin"
    model.write_bytes(b"weights")
    published = export_artifact(model, (model,), tmp_path / "published", {})
    verify_artifact(published.path, published.sha256)
    published.path.write_bytes(b"overwritten by another run")
    with pytest.raises(ArtifactChanged, match="differs from the reported"):
        verify_artifact(published.path, published.sha256)
