"""The shape of the code, checked: imports point one way (flows -> tasks -> quantmill, and
the core never imports Prefect), and nothing outside quantmill/formats/ dispatches on a
format's name or a model file's suffix."""

import re
from pathlib import Path

from quantmill.formats import FORMATS

ROOT = Path(__file__).resolve().parents[1]
# Format names and model-file suffixes belong to the formats' own modules.
OUTSIDE_FORMATS = [
    p for folder in ("quantmill", "tasks", "flows", "benchmarks") for p in (ROOT / folder).rglob("*.py")
    if "formats" not in p.relative_to(ROOT).parts
]


def _strings(path: Path) -> list[str]:
    return re.findall(r"""["']([^"'\n]*)["']""", path.read_text())


def test_no_format_name_or_model_suffix_outside_the_formats():
    offenders = []
    for path in OUTSIDE_FORMATS:
        for text in _strings(path):
            if text in FORMATS or re.fullmatch(r"\.(onnx|gguf)", text) or re.search(r"endswith\(.\.(onnx|gguf)", text):
                offenders.append(f"{path.relative_to(ROOT)}: {text!r}")
        if re.search(r"""(suffix|endswith)\W+["']\.(onnx|gguf)""", path.read_text()):
            offenders.append(f"{path.relative_to(ROOT)}: suffix test")
    assert offenders == []


def test_imports_point_one_way():
    def imports(folder: str) -> set[str]:
        found = set()
        for path in (ROOT / folder).rglob("*.py"):
            found |= set(re.findall(r"^\s*(?:from|import) (\w+)", path.read_text(), re.MULTILINE))
        return found

    assert "prefect" not in imports("quantmill") and not imports("quantmill") & {"tasks", "flows"}
    assert "flows" not in imports("tasks")
