"""What an artifact's metadata says about where it came from."""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from quantmill import __version__
from quantmill.formats import FORMATS
from quantmill.hashing import fingerprint, sha256_files
from quantmill.quantizers.onnx_runtime import QuantizeOptions

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
    """Return a sha256 over quantmill's own source and the versions of the libraries that
    shape its results, so a cached result is not reused after either changes."""
    root = Path(__file__).resolve().parent
    sources = sha256_files(root.rglob("*.py"), root)
    return fingerprint((sources, tool_versions()))


def artifact_metadata(
    options: QuantizeOptions, source_uri: str, source_sha256: str, source_version: str | None,
    calibration_sha256: str | None,
) -> dict:
    """Return the metadata written beside an artifact."""
    fmt = FORMATS[options.format]
    return {
        "format": fmt.name, "runtime": fmt.runtime, "scheme": fmt.scheme,
        "quantization": asdict(options),
        "calibration_method": options.calibration_method,
        "calibration_data_sha256": calibration_sha256 if fmt.calibrated else None,
        "source": {"uri": source_uri, "sha256": source_sha256, "version": source_version},
        "tool_versions": tool_versions(),
    }
