"""A language model given as a GGUF file, as many users have only that.

transformers' GGUF loader dequantizes the weights into a Hugging Face folder (float16
safetensors and config) for the PyTorch reference and the formats that start from PyTorch.
The GGUF itself stays the source of everything llama.cpp reads: it is kept in the folder
(SOURCE_GGUF), the F16 GGUF is made from it by llama.cpp's quantizer (not converted back from
the folder), and text is tokenized by its own tokenizer through llama.cpp. Why not through
the folder's tokenizer: transformers rebuilds a GGUF's tokenizer by architecture, so a Llama
with a GPT-2 style vocabulary (SmolLM2) gets a SentencePiece-style one that splits text
differently and that llama.cpp's converter turns into a vocabulary llama.cpp cannot load.

The reference is the dequantized model: a GGUF of a quantized type has its weights on that
type's grid already, and SOURCE_RECORD says which type it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from quantmill.errors import InputError
from quantmill.hashing import sha256_tree
from quantmill.isolation import in_worker

_MAGIC = b"GGUF"
SOURCE_GGUF = "source.gguf"
SOURCE_RECORD = "quantmill_source.json"


def is_gguf(path: Path) -> bool:
    """Return whether path is a regular file that starts with GGUF's magic bytes."""
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        return handle.read(4) == _MAGIC


def folder_from_gguf(gguf: Path, workdir: Path) -> Path:
    """Return the Hugging Face folder dequantized from gguf (float16 safetensors, config and
    tokenizer files, the GGUF as SOURCE_GGUF, and SOURCE_RECORD naming it, its sha256 and its
    weights' type), made once per GGUF content under workdir and moved into place whole.
    Raises InputError naming the file when transformers cannot read it (an architecture its
    GGUF loader does not know)."""
    # Hashed once per process for an unchanged file (a GGUF may be many GB).
    digest = sha256_tree(gguf)
    out = workdir / "from-gguf" / digest[:16]
    if (out / SOURCE_RECORD).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out.parent))
    try:
        try:
            file_type = in_worker("transformers", f"dequantizing {gguf.name}", _dequantize, gguf, staging)
        except (ValueError, KeyError, RuntimeError, OSError) as err:
            raise InputError(gguf, f"transformers cannot read this GGUF ({type(err).__name__}: {str(err)[:300]})") from None
        shutil.copyfile(gguf, staging / SOURCE_GGUF)
        (staging / SOURCE_RECORD).write_text(json.dumps({"gguf": gguf.name, "sha256": digest, "file_type": file_type}))
        staging.chmod(0o755)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def source_gguf(folder: Path) -> Path | None:
    """Return the GGUF that folder was dequantized from, or None for a folder that was not."""
    path = folder / SOURCE_GGUF
    return path if (folder / SOURCE_RECORD).is_file() and path.is_file() else None


def source_record(folder: Path) -> dict | None:
    """Return what SOURCE_RECORD in folder says of its GGUF (name, sha256, file_type), or None."""
    path = folder / SOURCE_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def tokenize(gguf: Path, text: str) -> tuple[np.ndarray, int | None]:
    """Return text's token ids by gguf's own tokenizer (llama.cpp's, in its worker process),
    without BOS, and the BOS id when the GGUF says a text starts with one (else None)."""
    from quantmill.runtimes.llama_cpp import LlamaCpp

    return in_worker(LlamaCpp.name, f"tokenizing with {gguf.name}", _tokenize, gguf, text, preload=LlamaCpp.preload)


def detokenize(gguf: Path, windows: np.ndarray) -> list[str]:
    """Return each window of token ids as text by gguf's own tokenizer (llama.cpp's)."""
    from quantmill.runtimes.llama_cpp import LlamaCpp

    return in_worker(LlamaCpp.name, f"detokenizing with {gguf.name}", _detokenize, gguf, windows,
                     preload=LlamaCpp.preload)


def _vocab(gguf: Path):
    from llama_cpp import Llama

    return Llama(str(gguf), vocab_only=True, verbose=False)


def _tokenize(gguf: Path, text: str) -> tuple[np.ndarray, int | None]:
    vocab = _vocab(gguf)
    bos = vocab.token_bos()
    adds_bos = vocab.tokenize(b"a", add_bos=True)[:1] == [bos]
    return np.asarray(vocab.tokenize(text.encode("utf-8"), add_bos=False), dtype=np.int64), bos if adds_bos else None


def _detokenize(gguf: Path, windows: np.ndarray) -> list[str]:
    vocab = _vocab(gguf)
    return [vocab.detokenize([int(t) for t in w]).decode("utf-8", errors="replace") for w in windows]


def _dequantize(gguf: Path, out: Path) -> str:
    import torch
    from gguf import GGUFReader, LlamaFileType
    from transformers import AutoModelForCausalLM, AutoTokenizer

    field = GGUFReader(str(gguf)).fields.get("general.file_type")
    file_type = LlamaFileType(int(field.parts[field.data[0]][0])).name if field else "unknown"
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float16,
                                                 trust_remote_code=False)
    # The loader marks the model as quantized with GGUF, which save_pretrained refuses; its
    # weights are plain float16 tensors by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False).save_pretrained(out)
    return file_type.removeprefix("MOSTLY_")
