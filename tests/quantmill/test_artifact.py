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
