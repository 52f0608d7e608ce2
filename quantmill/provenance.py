"""What an artifact's metadata says about where it came from."""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from quantmill import __version__
from quantmill.formats import get_format
from quantmill.hashing import fingerprint, sha256_files

_TOOLS = ("onnx", "onnxruntime", "numpy", "torch", "transformers", "llama-cpp-python", "llmcompressor", "compressed-tensors")


def tool_versions() -> dict[str, str]:
    """Return the installed versions of quantmill and the libraries that shaped an artifact."""
    found = {"quantmill": __version__}
    for name in _TOOLS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


@lru_cache(maxsize=1)
def code_version() -> str:
    """Return a sha256 over quantmill's own source (the core, and the tasks beside it whose
    code makes the cached results) and the versions of the libraries that shape its
    results, so a cached result is not reused after either changes."""
    root = Path(__file__).resolve().parent.parent
    files = [p for folder in ("quantmill", "tasks") for p in (root / folder).rglob("*.py")]
    return fingerprint((sha256_files(files, root), tool_versions()))


def artifact_metadata(
    format_name: str, options: object, source_uri: str, source_sha256: str, source_version: str | None,
    calibration_sha256: str | None,
) -> dict:
    """Return the metadata written beside an artifact."""
    fmt = get_format(format_name)
    return {
        "format": fmt.name, "runtime": fmt.runtime, "scheme": fmt.description,
        "quantization": asdict(options),
        "calibration_data_sha256": calibration_sha256 if fmt.uses_calibration(options) else None,
        "source": {"uri": source_uri, "sha256": source_sha256, "version": source_version},
        "tool_versions": tool_versions(),
    }
