"""Hugging Face causal language models: a directory (config.json naming a *ForCausalLM
architecture, safetensors weights, a tokenizer) or a transformers-flavor MLflow model. Its
data is plain text, cut into token windows by the model's own tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quantmill.calibration import CalibrationPolicy
from quantmill.data import Dataset, check_regular_file, read_config, read_npz
from quantmill.errors import FormatUnavailable, InputError
from quantmill.hashing import sha256_file, sha256_files
from quantmill.llama_converter import converter_architectures
from quantmill.models.base import Model, ModelKind
from quantmill.models.gguf_input import (
    detokenize,
    folder_from_gguf,
    is_gguf,
    source_gguf,
    source_record,
    tokenize,
)
from quantmill.models.hf_encoder import safetensors_weights
from quantmill.tracking.registry import transformers_weights_dir

WINDOW = 128
WINDOWS = 32
# No tokenizer here averages more than this many characters per token, so a prefix this
# long per wanted token is enough text to tokenize.
_CHARS_PER_TOKEN = 16


def adds_bos(tokenizer) -> bool:
    """Return whether the tokenizer's own configuration puts BOS before a text (its special
    tokens, as `add_special_tokens=True` applies them): Llama and Gemma do, Qwen2 (which has
    no BOS token) does not. llama.cpp follows the same setting (the converter writes it as
    tokenizer.ggml.add_bos_token), so both runtimes see the same windows."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


def token_windows(model_dir: Path, text_path: Path, windows: int, window: int = WINDOW) -> np.ndarray:
    """Return up to `windows` consecutive windows of window+1 token ids of text_path,
    tokenized with model_dir's own tokenizer (its source GGUF's, through llama.cpp, for a
    folder dequantized from one): each starting with BOS where the tokenizer adds one
    (adds_bos), else window+1 tokens of text; never a stand-in for a BOS it lacks."""
    text = text_path.read_text(encoding="utf-8")[: windows * (window + 1) * _CHARS_PER_TOKEN]
    gguf = source_gguf(model_dir)
    if gguf is not None:
        ids, bos_id = tokenize(gguf, text)
        bos = [] if bos_id is None else [bos_id]
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
        ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
        bos = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    step = window + 1 - len(bos)
    count = min(windows, len(ids) // step)
    rows = [np.asarray(bos + ids[i * step:(i + 1) * step].tolist(), dtype=np.int64) for i in range(count)]
    return np.stack(rows) if rows else np.zeros((0, window + 1), dtype=np.int64)


def decode_windows(model_dir: Path, windows: np.ndarray) -> list[str]:
    """Return each window of token ids as text, by the tokenizer that made them (token_windows)."""
    gguf = source_gguf(model_dir)
    if gguf is not None:
        return detokenize(gguf, windows)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    return [tokenizer.decode(w, skip_special_tokens=True) for w in windows]


def text_dataset(model_dir: Path, text_path: Path, windows: int = WINDOWS) -> Dataset:
    """Return text_path's token windows as a Dataset (input `input_ids`), identified by the
    sha256 of the file. Raises InputError for a missing file or too little text."""
    check_regular_file(text_path)
    try:
        rows = token_windows(model_dir, text_path, windows)
    except UnicodeDecodeError:
        raise InputError(text_path, "not UTF-8 text") from None
    if len(rows) == 0:
        raise InputError(text_path, f"too little text: fewer than {WINDOW + 1} tokens")
    return Dataset(text_path, sha256_file(text_path), {"input_ids": rows})


def log_transformers(path: Path, name: str, auto_class, task: str):
    """Log the Hugging Face directory path with MLflow's transformers flavor (model loaded
    by auto_class from safetensors, with its tokenizer), registered as name."""
    from importlib.metadata import version as installed

    import mlflow
    from transformers import AutoTokenizer

    components = {
        "model": auto_class.from_pretrained(path, use_safetensors=True, trust_remote_code=False),
        "tokenizer": AutoTokenizer.from_pretrained(path, trust_remote_code=False),
    }
    # Stated outright: MLflow's inference of requirements imports torchvision, which these
    # models do not need.
    requirements = [f"{pkg}=={installed(pkg)}" for pkg in ("torch", "transformers", "tokenizers")]
    return mlflow.transformers.log_model(components, name="model", task=task, registered_model_name=name,
                                         pip_requirements=requirements)


def _architectures(path: Path) -> list[str]:
    """Return the architectures path's config.json names ([] without one). Raises InputError
    for a config.json that cannot be a model's (read_config)."""
    config = path / "config.json"
    if not config.exists() and not config.is_symlink():
        return []
    return _named_architectures(read_config(config))


def _named_architectures(config: dict) -> list[str]:
    """Return the architectures a model's config (config.json's object) names."""
    return [str(a) for a in config.get("architectures") or []]


def refuse_model_code(model_dir: Path, config: dict | None = None) -> None:
    """Raise InputError naming the file when model_dir's config.json (config, where the caller
    has read it) or tokenizer_config.json maps classes to code the model ships (auto_map):
    quantmill never runs a model's own code, and llama.cpp's converter loads some tokenizers
    with trust_remote_code=True."""
    for name, read in (("config.json", config), ("tokenizer_config.json", None)):
        path = model_dir / name
        if read is None:
            read = read_config(path) if path.exists() or path.is_symlink() else {}
        if read.get("auto_map"):
            raise InputError(path, f"the model ships its own code (auto_map: {sorted(read['auto_map'])}); "
                                   "quantmill never runs it (llama.cpp's converter could), so it does not take the model")


def _check_architecture(config_path: Path, config: dict, architecture: str) -> None:
    """Raise InputError naming config_path (whose contents are config) when transformers has
    no causal-LM class for architecture, when llama.cpp's converter (where make unpacked it) converts no such
    architecture, or when llama.cpp would compute the model otherwise than its config says."""
    from importlib.metadata import version

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if architecture not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        raise InputError(config_path, f"architecture {architecture}: transformers {version('transformers')} has no "
                                      "causal-LM class for it (and model code of its own is never run)")
    try:
        convertible = architecture in converter_architectures()
    except FormatUnavailable:
        convertible = True  # not unpacked here: the GGUF formats say so when they are tried
    if not convertible:
        raise InputError(config_path, f"architecture {architecture}: llama.cpp's converter (llama-cpp-python "
                                      f"{version('llama-cpp-python')}) cannot convert it to GGUF")
    if architecture == "Gemma3ForCausalLM":
        heads, hidden = config.get("num_attention_heads", 8), config.get("hidden_size", 2304)
        # llama.cpp scales Gemma 3's queries by 1/sqrt(head_dim), by 1/sqrt(hidden/heads) for
        # the 27B (62 layers), whatever query_pre_attn_scalar says (llama-model.cpp).
        scale = hidden // heads if config.get("num_hidden_layers") == 62 else config.get("head_dim", 256)
        if config.get("query_pre_attn_scalar", 256) != scale:
            raise InputError(config_path, f"architecture {architecture} with query_pre_attn_scalar "
                                          f"{config.get('query_pre_attn_scalar', 256)}: llama.cpp scales attention by "
                                          f"1/sqrt({scale}), so its GGUF would be another model")


class HfCausalLmKind(ModelKind):
    """A decoder language model, quantized from its safetensors directory."""

    name = "hf-causal-lm"
    tasks = ("language-modeling",)
    flavor = "transformers"
    reference_runtime = "transformers"
    policy = CalibrationPolicy(min_samples=8, recommended_samples=16)

    def recognizes(self, path: Path) -> bool:
        """Return whether path is a folder whose config names a causal LM architecture, or a
        GGUF file."""
        return is_gguf(path) or path.is_dir() and any(a.endswith("ForCausalLM") for a in _architectures(path))

    def resolve(self, path: Path, uri: str, name: str, version: str | None, workdir: Path) -> Model:
        """Return the Model of the causal LM directory at path, or of the folder dequantized
        from the GGUF file at path (gguf_input.folder_from_gguf, made once under workdir).

        Raises InputError when the directory is missing, is not a causal LM, has no
        safetensors weights (pickles are never loaded) or no tokenizer, or when transformers
        cannot read the GGUF.
        """
        if is_gguf(path):
            path = folder_from_gguf(path, workdir)
        if not path.is_dir():
            raise InputError(path, "no such directory (a language model is a Hugging Face directory)")
        config_path = path / "config.json"
        if not config_path.is_file():
            raise InputError(path, "not a Hugging Face model directory (no config.json)")
        config = read_config(config_path)
        architectures = _named_architectures(config)
        if not any(a.endswith("ForCausalLM") for a in architectures):
            raise InputError(config_path, f"not a causal language model (architectures: {architectures or 'none'})")
        _check_architecture(config_path, config, architectures[0])
        refuse_model_code(path, config)
        weights = safetensors_weights(path)
        if not any((path / file).is_file() for file in ("tokenizer.json", "tokenizer.model")):
            raise InputError(path, "no tokenizer (tokenizer.json or tokenizer.model)")
        record = source_record(path)
        reference = ("the checkpoint's weights, run in float32" if record is None else
                     f"fp16 dequantized from {record['gguf']} ({record['file_type']} weights), run in float32")
        return Model(uri, name, version, self.name, path, sha256_files(weights, path), "decoder-lm",
                     _parameters(weights), sum(w.stat().st_size for w in weights), tokenizer_dir=path,
                     architecture=architectures[0], reference=reference)

    def from_registry(self, local: Path, flavors: dict, uri: str, name: str, version: str, workdir: Path) -> Model:
        """Return the Model of a downloaded transformers-flavor causal LM."""
        return self.resolve(transformers_weights_dir(local), uri, name, version, workdir)

    def load_data(self, model: Model, path: Path) -> Dataset:
        """Return the text file's token windows (text_dataset)."""
        return text_dataset(model.path, path)

    def load_samples(self, model: Model, path: Path) -> Dataset:
        """Return the token windows that data.save_samples wrote."""
        arrays = read_npz(path)
        if "input_ids" not in arrays:
            raise InputError(path, "no array named 'input_ids' (token windows)")
        return Dataset(path, sha256_file(path), {"input_ids": arrays["input_ids"]})

    def features(self, model: Model, dataset: Dataset) -> dict[str, np.ndarray]:
        """Return each window's log-perplexity under the full-precision model.

        Why this and not statistics of token ids: an id's value is an arbitrary position in
        the vocabulary, while how surprising a window is to the model itself is what
        calibration and quantization error depend on; text that drifted (another language,
        another code base, another domain) shows as a shift in this distribution.
        """
        from quantmill.runtimes import get_runtime

        return {"window_log_perplexity": get_runtime(self.reference_runtime).window_nll(model.path, dataset.inputs["input_ids"])}

    def log_source(self, path: Path, name: str):
        """Log the causal LM with MLflow's transformers flavor and its tokenizer, registered as name."""
        from transformers import AutoModelForCausalLM

        return log_transformers(path, name, AutoModelForCausalLM, "text-generation")


def _parameters(weights: list[Path]) -> int:
    from safetensors import safe_open

    total = 0
    for file in weights:
        with safe_open(str(file), framework="numpy") as handle:
            for key in handle.keys():
                count = 1
                for dim in handle.get_slice(key).get_shape():
                    count *= dim
                total += count
    return total
