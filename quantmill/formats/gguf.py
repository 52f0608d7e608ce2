"""GGUF for llama.cpp: llama.cpp's own converter (Hugging Face directory -> F16 GGUF, made
once per model and shared by every scheme) and its own quantizer (llama_model_quantize,
through llama-cpp-python). One class, registered once per scheme; a miss escalates to the
next scheme up.

The converter script is not installed by any wheel: `make` unpacks it, with the gguf-py it
was written against, from the llama-cpp-python source distribution pinned in
constraints.txt, so converter and quantizer come from one llama.cpp tree. An importance
matrix (imatrix) needs llama.cpp's own llama-imatrix and llama-quantize programs, which
`make llama-tools` builds from that same source: llama-cpp-python's quantize parameters take
the imatrix as a C++ std::unordered_map, which ctypes cannot build.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from quantmill.atomic import atomic_file
from quantmill.data import Dataset
from quantmill.errors import FormatUnavailable
from quantmill.formats.base import FALLBACK, Format, Step
from quantmill.hardware import Hardware, local_cpu
from quantmill.isolation import WorkerCrashed, run_command
from quantmill.llama_buffers import after_crash, repack_weights
from quantmill.llama_converter import llama_cpp_source
from quantmill.llama_tools import llama_tools
from quantmill.models.base import Model
from quantmill.models.gguf_input import source_gguf
from quantmill.models.hf_causal_lm import decode_windows, refuse_model_code
from quantmill.progress import Progress

# ftype numbers from llama.h (LLAMA_FTYPE_MOSTLY_*), smallest scheme first: the ladder.
FTYPES = {"Q3_K_M": 12, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "Q8_0": 7}
F16_FTYPE = 1
# The schemes whose rounding llama.cpp weights by an importance matrix (not Q8_0's).
IMATRIX_SCHEMES = ("Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K")
# ggml types a per-tensor override may name (llama-quantize --tensor-type), smallest first,
# and the type each scheme gives most of its tensors.
TENSOR_TYPES = ("q3_k", "q4_k", "q5_k", "q6_k", "q8_0")
SCHEME_TYPE = {"Q3_K_M": "q3_k", "Q4_K_M": "q4_k", "Q5_K_M": "q5_k", "Q6_K": "q6_k", "Q8_0": "q8_0"}
# Llama's tensor names in a GGUF: the FFN's up and gate projections hold two thirds of its
# weights (one type smaller makes the file smaller); attention is where llama.cpp itself
# spends extra bits (one type larger buys error back for little size).
FFN_UP_GATE = "ffn_(up|gate)"
ATTENTION = "attn_(q|k|v|output)"
F16_FILE = "model-f16.gguf"
# llama.cpp's converter, llama-imatrix and llama-quantize: an 8B model converts in about 75 s
# and quantizes in about 70 s on the GPU machine's CPU; an hour is a hung tool.
TOOL_TIMEOUT_S = 3600


@dataclass(frozen=True)
class GgufOptions:
    """A llama.cpp quantization scheme, with or without an importance matrix computed on
    the calibration text, and per-tensor type overrides: (pattern, ggml type) pairs, the
    pattern a regular expression searched in each tensor's GGUF name, as llama-quantize's
    --tensor-type takes them."""

    scheme: str
    imatrix: bool = False
    tensor_types: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.scheme not in FTYPES:
            raise ValueError(f"unknown GGUF scheme {self.scheme!r}; known: {', '.join(FTYPES)}")
        if self.imatrix and self.scheme not in IMATRIX_SCHEMES:
            raise ValueError(f"llama.cpp uses no importance matrix for {self.scheme}; it does for {', '.join(IMATRIX_SCHEMES)}")
        for pattern, ggml_type in self.tensor_types:
            if ggml_type not in TENSOR_TYPES:
                raise ValueError(f"tensor type override {pattern}={ggml_type}: unknown type; known: {', '.join(TENSOR_TYPES)}")
            if not pattern or "=" in pattern:
                raise ValueError(f"tensor type override {pattern!r}: the pattern must be non-empty and hold no '='")
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"tensor type override {pattern!r}: not a regular expression ({err})") from None

    def describe(self) -> str:
        """Return the scheme and what changes it, e.g. 'Q4_K_M with imatrix, ffn_(up|gate)=q3_k'."""
        parts = [f"{self.scheme} with imatrix" if self.imatrix else self.scheme]
        return ", ".join(parts + [f"{pattern}={ggml_type}" for pattern, ggml_type in self.tensor_types])


def convert_to_gguf(model_dir: Path, out_path: Path) -> Path:
    """Convert the Hugging Face directory model_dir to an F16 GGUF at out_path (atomically).

    Raises InputError for a model that ships its own code; FormatUnavailable without the
    converter; WorkerCrashed with its exit status or signal and the tail of its stderr when
    it fails; WorkerTimeout past TOOL_TIMEOUT_S.
    """
    refuse_model_code(model_dir)
    source = llama_cpp_source()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source / "gguf-py"), os.environ.get("PYTHONPATH", "")])}
    with atomic_file(out_path) as tmp:
        _run_tool([sys.executable, str(source / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(tmp),
                   "--outtype", "f16"], f"convert_hf_to_gguf.py on {model_dir}", env)
    return out_path


def quantize_gguf(f16_path: Path, out_path: Path, scheme: str) -> Path:
    """Quantize the GGUF at f16_path to scheme at out_path with llama.cpp's quantizer (F16:
    requantize any GGUF to F16); return out_path. Raises FormatUnavailable without
    llama-cpp-python, ValueError for an unknown scheme, RuntimeError when llama.cpp reports
    failure."""
    if scheme not in FTYPES and scheme != "F16":
        raise ValueError(f"unknown GGUF scheme {scheme!r}; known: {', '.join(FTYPES)}")
    try:
        import llama_cpp
    except ImportError as err:
        raise FormatUnavailable(f"llama-cpp-python is not installed ({err})") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES.get(scheme, F16_FTYPE)
    # A GGUF given as the model may be of a quantized type already; llama.cpp then refuses
    # to quantize it again unless told.
    params.allow_requantize = scheme == "F16"
    params.nthread = os.cpu_count() or 1
    with atomic_file(out_path) as tmp:
        status = llama_cpp.llama_model_quantize(str(f16_path).encode(), str(tmp).encode(), ctypes.byref(params))
        if status != 0:
            raise RuntimeError(f"llama_model_quantize({f16_path}, {scheme}) returned {status}")
    return out_path


def _run_tool(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    run_command(command, what, TOOL_TIMEOUT_S, env)


def run_model_tool(command: list[str], what: str) -> str:
    """Run a llama.cpp program that loads a model and computes with it (llama-imatrix,
    llama-perplexity) with the CPU buffer types quantmill's own loads use, once more without
    the extra ones where they crashed (llama_buffers); return its stdout and stderr. Raises
    WorkerCrashed when it fails, WorkerTimeout past TOOL_TIMEOUT_S."""
    isa = local_cpu("llama.cpp").isa
    try:
        return run_command([*command, *_repack_flags(isa)], what, TOOL_TIMEOUT_S, merge_stderr=True)
    except WorkerCrashed:
        if not after_crash(isa):
            raise
        return run_command([*command, *_repack_flags(isa)], f"{what} (--no-repack)", TOOL_TIMEOUT_S, merge_stderr=True)


def compute_imatrix(f16_path: Path, model_dir: Path, calibration: Dataset, out_path: Path) -> Path:
    """Write llama-imatrix's importance matrix of the GGUF at f16_path over the calibration
    windows to out_path, and beside it (.txt) the text it read: the windows decoded with
    model_dir's tokenizer (decode_windows), one chunk per window. Return out_path. Raises
    FormatUnavailable without the tools, WorkerCrashed when llama-imatrix fails."""
    tools = llama_tools()
    windows = calibration.inputs["input_ids"]
    text = out_path.with_suffix(".txt")
    with atomic_file(text) as tmp:
        tmp.write_text("\n".join(decode_windows(model_dir, windows)))
    command = [str(tools / "llama-imatrix"), "-m", str(f16_path), "-f", str(text), "-c", str(windows.shape[1]),
               "--chunks", str(len(windows)), "--no-ppl", "-t", str(os.cpu_count() or 1)]
    with atomic_file(out_path) as tmp:
        run_model_tool([*command, "-o", str(tmp)], f"llama-imatrix on {f16_path}")
    return out_path


def _repack_flags(isa: tuple[str, ...]) -> list[str]:
    # The same CPU buffer choice as quantmill's own llama.cpp loads make.
    return [] if repack_weights(isa) else ["--no-repack"]


def quantize_gguf_tool(f16_path: Path, out_path: Path, scheme: str, imatrix: Path | None = None,
                       tensor_types: tuple[tuple[str, str], ...] = ()) -> Path:
    """Quantize the GGUF at f16_path to scheme at out_path with llama-quantize, weighting each
    tensor's rounding error by the importance matrix when one is given, and giving the
    tensors whose names match each override's pattern its type; return out_path. Raises
    FormatUnavailable without the tools, WorkerCrashed when llama-quantize fails."""
    tools = llama_tools()
    flags = [*(["--imatrix", str(imatrix)] if imatrix else []),
             *(arg for pattern, ggml_type in tensor_types for arg in ("--tensor-type", f"{pattern}={ggml_type}"))]
    with atomic_file(out_path) as tmp:
        _run_tool([str(tools / "llama-quantize"), *flags, str(f16_path), str(tmp), scheme, str(os.cpu_count() or 1)],
                  f"llama-quantize {' '.join(flags)} on {f16_path}")
    return out_path


class _GgufFormat(Format):
    kinds = ("hf-causal-lm",)
    runtime = "llama.cpp"

    def output_path(self, model: Model, options: object, calibration: Dataset | None, workdir: Path) -> Path:
        """Return the content-named .gguf path in workdir."""
        return super().output_path(model, options, calibration, workdir).with_suffix(".gguf")

    def prepare(self, model: Model, workdir: Path) -> Path:
        """Return the F16 GGUF of model in workdir, made on first use: converted from the
        Hugging Face folder, or, for a model given as a GGUF, requantized from that GGUF by
        llama.cpp (its tokenizer and metadata kept as they are)."""
        f16 = workdir / F16_FILE
        if f16.exists():
            return f16
        source = source_gguf(model.path)
        return convert_to_gguf(model.path, f16) if source is None else quantize_gguf(source, f16, "F16")


class GgufF16(_GgufFormat):
    """The F16 GGUF llama.cpp's converter makes: the baseline every GGUF is measured against."""

    name = "gguf-f16"
    description = "GGUF F16 (the baseline)"
    candidate = False

    def output_path(self, model: Model, options: object, calibration: Dataset | None, workdir: Path) -> Path:
        """Return where prepare keeps the F16 GGUF."""
        return workdir / F16_FILE

    def quantize(self, model: Model, options: object, calibration: Dataset | None, workdir: Path,
                 progress: Progress | None = None) -> Path:
        """Return the F16 GGUF (prepare)."""
        return self.prepare(model, workdir)


class Gguf(_GgufFormat):
    """GGUF at one llama.cpp scheme."""

    def __init__(self, scheme: str, description: str, safety: str | None = None) -> None:
        self.scheme = scheme
        self.name = f"gguf-{scheme.lower()}"
        self.description = f"GGUF {scheme}: {description}"
        self.safety = safety

    def default_options(self, hardware: Hardware) -> GgufOptions:
        """Return this scheme."""
        return GgufOptions(self.scheme)

    def ladder(self, reason: str, hardware: Hardware) -> tuple[Step, ...]:
        """Return this scheme, the same with an importance matrix from the calibration text
        where llama.cpp uses one, then each larger scheme in turn."""
        schemes = list(FTYPES)
        up = schemes[schemes.index(self.scheme) + 1:]
        weighted = (Step(self.name, GgufOptions(self.scheme, imatrix=True),
                         "missed the budget; same scheme with an importance matrix from the calibration text"),
                    ) if self.scheme in IMATRIX_SCHEMES else ()
        return (Step(self.name, GgufOptions(self.scheme), f"candidate: {reason}"), *weighted) + tuple(Step(f"gguf-{s.lower()}", GgufOptions(s), f"missed the budget; next scheme up: {s}") for s in up)

    def search_moves(self, options: GgufOptions) -> tuple[Step, ...]:
        """Return the mixed-precision variants of options a search tries: the FFN's up and
        gate projections one type smaller (a smaller file), and attention one type larger
        (less error); none for options that already override tensor types."""
        if options.tensor_types:
            return ()
        base = TENSOR_TYPES.index(SCHEME_TYPE[options.scheme])
        moves = []
        if base > 0:
            smaller = TENSOR_TYPES[base - 1]
            moves.append(Step(self.name, replace(options, tensor_types=((FFN_UP_GATE, smaller),)),
                              f"search: FFN up/gate projections at {smaller}, the rest {options.scheme}: smaller"))
        if base + 1 < len(TENSOR_TYPES):
            larger = TENSOR_TYPES[base + 1]
            moves.append(Step(self.name, replace(options, tensor_types=((ATTENTION, larger),)),
                              f"search: attention at {larger}, the rest {options.scheme}: less error"))
        return tuple(moves)

    def uses_calibration(self, options: GgufOptions) -> bool:
        """Return whether options need the calibration windows: only for an importance matrix."""
        return options.imatrix

    def quantize(self, model: Model, options: GgufOptions, calibration: Dataset | None, workdir: Path,
                 progress: Progress | None = None) -> Path:
        """Write the GGUF quantized to options.scheme from the shared F16 GGUF, with an
        importance matrix over calibration when options ask for one (cached in workdir per
        calibration set) and per-tensor types when options override them (both through
        llama-quantize). Raises ValueError for an imatrix without calibration data."""
        f16 = self.prepare(model, workdir)
        out = self.output_path(model, options, calibration, workdir)
        if not options.imatrix and not options.tensor_types:
            return quantize_gguf(f16, out, options.scheme)
        imatrix = None
        if options.imatrix:
            if calibration is None:
                raise ValueError("an importance matrix needs calibration data")
            imatrix = workdir / f"imatrix-{calibration.fingerprint()[:16]}.gguf"
            if not imatrix.exists():
                compute_imatrix(f16, model.path, calibration, imatrix)
        return quantize_gguf_tool(f16, out, options.scheme, imatrix, options.tensor_types)


FORMATS = (
    GgufF16(),
    Gguf("Q3_K_M", "3-bit k-quants, 4- and 5-bit for sensitive tensors"),
    Gguf("Q4_K_M", "4-bit k-quants, 6-bit for sensitive tensors"),
    Gguf("Q5_K_M", "5-bit k-quants, 6-bit for sensitive tensors"),
    Gguf("Q6_K", "6-bit k-quants"),
    Gguf("Q8_0", "8-bit blocks of 32 weights", FALLBACK),
)
