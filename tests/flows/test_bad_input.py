"""Bad input ends in one line naming the file and the problem, exit code 2, no traceback,
and nothing recorded or registered."""

import os
import time
from pathlib import Path

import numpy as np
import pytest

from flows.cli import EXIT_BAD_INPUT, main


def _run(capsys, model, calibration, evaluation, task="classification"):
    code = main(["run", str(model), "--task", task, "--calibration-data", str(calibration), "--eval-data", str(evaluation)])
    err = capsys.readouterr().err.strip()
    return code, err


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _assert_rejected(code, err, path, problem, home):
    assert code == EXIT_BAD_INPUT
    assert err.count("\n") == 0, err
    assert "Traceback" not in err
    assert err.startswith(f"quantmill: error: {path}: ")
    assert problem in err
    assert not (home / "mlflow.db").exists()


def test_missing_model(capsys, digits, tmp_path, quantmill_home):
    missing = tmp_path / "nope.onnx"
    _assert_rejected(*_run(capsys, missing, digits.calibration, digits.evaluation), missing, "no such file", quantmill_home)


def test_file_that_is_not_onnx(capsys, digits, tmp_path, quantmill_home):
    fake = tmp_path / "model.onnx"
    fake.write_text("this is not a model\n" * 50)
    _assert_rejected(*_run(capsys, fake, digits.calibration, digits.evaluation), fake, "not an ONNX model", quantmill_home)


def test_truncated_onnx(capsys, digits, tmp_path, quantmill_home):
    truncated = tmp_path / "truncated.onnx"
    data = digits.model.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    code, err = _run(capsys, truncated, digits.calibration, digits.evaluation)
    _assert_rejected(code, err, truncated, "", quantmill_home)
    assert any(p in err for p in ("not an ONNX model", "invalid ONNX model", "ONNX Runtime cannot load it"))


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"image": np.zeros((10, 1, 8, 8), np.float32)}, "no array named 'pixels' for model input 'pixels' (arrays: image)"),
        ({"pixels": np.zeros((10, 64), np.float32)}, "has shape (10, 64); model input 'pixels' expects (?, 1, 8, 8)"),
        ({"pixels": np.zeros((10, 1, 9, 9), np.float32)}, "expects (?, 1, 8, 8)"),
        ({"pixels": np.zeros((0, 1, 8, 8), np.float32)}, "is empty (0 samples)"),
        ({"pixels": np.full((10, 1, 8, 8), np.nan, np.float32)}, "contains 640 NaN or inf value(s)"),
        ({"pixels": np.where(np.eye(8)[None, None] > 0, np.inf, 0).repeat(10, 0).astype(np.float32)}, "contains 80 NaN or inf"),
    ],
    ids=["wrong-name", "wrong-rank", "wrong-shape", "empty", "nan", "inf"],
)
def test_bad_calibration_data(capsys, digits, tmp_path, quantmill_home, arrays, problem):
    bad = _npz(tmp_path / "calibration.npz", **arrays)
    _assert_rejected(*_run(capsys, digits.model, bad, digits.evaluation), bad, problem, quantmill_home)


def test_bad_evaluation_data_is_named(capsys, digits, tmp_path, quantmill_home):
    bad = tmp_path / "eval.csv"
    bad.write_text("a,b\n")
    _assert_rejected(*_run(capsys, digits.model, digits.calibration, bad), bad, "unsupported data format '.csv'", quantmill_home)


def test_empty_text_calibration_set(capsys, text_sets, tmp_path, quantmill_home):
    from quantmill.zoo.minilm import minilm_dir

    empty = tmp_path / "calibration.jsonl"
    empty.write_text("")
    code, err = _run(capsys, minilm_dir(), empty, text_sets[1], task="embedding")
    _assert_rejected(code, err, empty, "empty: no lines with a 'text' field", quantmill_home)


def test_language_model_directory_without_a_causal_lm(capsys, tiny_llama, tmp_path, quantmill_home):
    encoder_like = tmp_path / "not-an-lm"
    encoder_like.mkdir()
    (encoder_like / "config.json").write_text('{"architectures": ["BertModel"]}')
    code = main(["run", str(encoder_like), "--task", "language-modeling", "--calibration-data",
                 str(tiny_llama.train_text), "--eval-data", str(tiny_llama.heldout_text)])
    err = capsys.readouterr().err.strip()
    _assert_rejected(code, err, encoder_like / "config.json", "not a causal language model (architectures: ['BertModel'])", quantmill_home)


def test_language_model_eval_text_too_short(capsys, tiny_llama, tmp_path, quantmill_home):
    short = tmp_path / "heldout.txt"
    short.write_text("def f(): pass\n")
    code = main(["run", str(tiny_llama.model_dir), "--task", "language-modeling", "--calibration-data",
                 str(tiny_llama.train_text), "--eval-data", str(short)])
    err = capsys.readouterr().err.strip()
    _assert_rejected(code, err, short, "too little text", quantmill_home)


def test_nan_weights_are_refused_naming_the_tensor(capsys, digits, tmp_path, quantmill_home):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(digits.model))
    first = model.graph.initializer[0]
    poisoned = numpy_helper.to_array(first).copy()
    poisoned.flat[0] = np.nan
    first.CopyFrom(numpy_helper.from_array(poisoned, first.name))
    bad = tmp_path / "nan.onnx"
    onnx.save(model, str(bad))
    _assert_rejected(*_run(capsys, bad, digits.calibration, digits.evaluation), bad,
                     f"weight {first.name!r} holds 1 NaN or inf value(s)", quantmill_home)


@pytest.mark.parametrize(("flag", "value", "problem"), [
    ("--max-accuracy-drop", "nan", "max_accuracy_drop must be a finite number of points, not nan"),
    ("--max-accuracy-drop", "inf", "max_accuracy_drop must be a finite number of points, not inf"),
    ("--max-accuracy-drop", "-1", "max_accuracy_drop must be 0 or more points, not -1: a negative budget asks for a "
                                  "model better than full precision"),
    ("--max-kld", "0.01", "classification has no KL divergence to budget; max_kld is for language-modeling"),
    ("--max-ppl-increase", "2", "classification takes its budget as max_accuracy_drop (points), not max_ppl_increase"),
    ("--max-size-mb", "1", "max_size_mb is a goal for a search: give search_seconds (--search-seconds) too, the time it "
                           "may go on trying attempts"),
    ("--max-latency-ms", "0", "max_latency_ms must be a positive number, not 0.0"),
    # Numbers that are not finite or out of range, whichever option carries them.
    ("--benchmark-seconds", "nan", "benchmark_seconds must be a finite number of seconds above 0, not nan"),
    ("--benchmark-seconds", "-1", "benchmark_seconds must be a finite number of seconds above 0, not -1.0"),
    ("--benchmark-seconds", "inf", "benchmark_seconds must be a finite number of seconds above 0, not inf"),
    ("--search-seconds", "nan", "search_seconds must be a finite number of seconds, 0 or more, not nan"),
    ("--search-seconds", "-5", "search_seconds must be a finite number of seconds, 0 or more, not -5.0"),
    ("--max-size-mb", "nan", "max_size_mb must be a positive number, not nan"),
])
def test_budgets_that_cannot_be_judged(capsys, digits, quantmill_home, flag, value, problem):
    code = main(["run", str(digits.model), "--task", "classification", "--calibration-data", str(digits.calibration),
                 "--eval-data", str(digits.evaluation), flag, value])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT and err == f"quantmill: error: {problem}"
    assert not (quantmill_home / "mlflow.db").exists()


def test_out_naming_a_file(capsys, digits, tmp_path, quantmill_home):
    taken = tmp_path / "report"
    taken.write_text("not a folder")
    code = main(["run", str(digits.model), "--task", "classification", "--calibration-data", str(digits.calibration),
                 "--eval-data", str(digits.evaluation), "--out", str(taken)])
    _assert_rejected(code, capsys.readouterr().err.strip(), taken, "exists and is not a folder", quantmill_home)


def _evaluation_with(tmp_path, digits, **change):
    with np.load(digits.evaluation) as data:
        arrays = {"pixels": data["pixels"], "labels": data["labels"]} | change
    return _npz(tmp_path / "eval.npz", **arrays)


@pytest.mark.parametrize(("make", "problem"), [
    (lambda d, t: _evaluation_with(t, d, labels=np.load(d.evaluation)["labels"] + 10),
     "'labels' holds class 19, but the model scores 10 classes (0-9)"),
    (lambda d, t: _evaluation_with(t, d, labels=np.load(d.evaluation)["labels"] - 1), "'labels' holds a negative class (-1)"),
    (lambda d, t: _evaluation_with(t, d, labels=np.load(d.evaluation)["labels"] + 0.5),
     "'labels' are float64; expected integer class indices"),
    (lambda d, t: _evaluation_with(t, d, labels=np.load(d.evaluation)["labels"][:10]),
     "'labels' has shape (10,); expected one label per sample"),
    (lambda d, t: _evaluation_with(t, d, pixels=np.array([None] * len(np.load(d.evaluation)["labels"]), dtype=object)),
     "not a readable .npz archive (array 'pixels.npy' holds Python objects, which are never unpickled)"),
    (lambda d, t: _evaluation_with(t, d, pixels=np.load(d.evaluation)["pixels"][:6], labels=np.load(d.evaluation)["labels"][:6]),
     "6 evaluation samples; at least 16 are needed (half to choose an attempt, half to confirm it)"),
], ids=["labels-beyond-the-classes", "negative-labels", "float-labels", "labels-mismatched", "object-array",
        "too-few-to-split"])
def test_evaluation_data_that_cannot_judge_the_model(capsys, digits, tmp_path, quantmill_home, make, problem):
    bad = make(digits, tmp_path)
    _assert_rejected(*_run(capsys, digits.model, digits.calibration, bad), bad, problem, quantmill_home)


def test_out_that_cannot_be_written(capsys, digits, tmp_path, quantmill_home):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    code = main(["run", str(digits.model), "--task", "classification", "--calibration-data", str(digits.calibration),
                 "--eval-data", str(digits.evaluation), "--out", str(locked / "out")])
    err = capsys.readouterr().err.strip()
    if os.geteuid() == 0:  # root writes anywhere it may; /proc refuses even root
        code = main(["run", str(digits.model), "--task", "classification", "--calibration-data", str(digits.calibration),
                     "--eval-data", str(digits.evaluation), "--out", "/proc/quantmill-out"])
        err, locked = capsys.readouterr().err.strip(), Path("/proc")
    assert code == EXIT_BAD_INPUT and err.count("\n") == 0 and "cannot write there" in err, err
    assert err.startswith(f"quantmill: error: {locked}")


def test_a_registry_uri_that_names_nothing(capsys, digits, quantmill_home):
    code, err = _run(capsys, "models:/no-such-model/1", digits.calibration, digits.evaluation)
    # MLflow logs creating the local store's tables first; quantmill's own word is one line.
    (line,) = [e for e in err.splitlines() if "quantmill" in e]
    assert code == EXIT_BAD_INPUT and "Traceback" not in err
    assert line.startswith("quantmill: error: models:/no-such-model/1: not in the MLflow registry")


def _fifo(tmp_path: Path) -> Path:
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    return fifo


# Class: files that are not regular files. A read of a FIFO waits for a writer and one of
# /dev/zero never ends; each is refused at the door, in whichever role it is given.
@pytest.mark.parametrize("role", ["model", "calibration", "evaluation"])
@pytest.mark.parametrize(("make", "problem"), [
    (_fifo, "is a FIFO, not a regular file"),
    (lambda tmp_path: Path("/dev/zero"), "is a character device, not a regular file"),
], ids=["fifo", "device"])
def test_files_that_are_not_regular_files(capsys, digits, tmp_path, quantmill_home, role, make, problem):
    bad = make(tmp_path)
    files = {"model": digits.model, "calibration": digits.calibration, "evaluation": digits.evaluation, role: bad}
    started = time.monotonic()
    _assert_rejected(*_run(capsys, files["model"], files["calibration"], files["evaluation"]), bad, problem, quantmill_home)
    assert time.monotonic() - started < 10


def test_sensitivity_out_naming_a_file(capsys, digits, tmp_path, quantmill_home):
    taken = tmp_path / "scan"
    taken.write_text("not a folder")
    code = main(["sensitivity", str(digits.model), "--task", "classification", "--calibration-data",
                 str(digits.calibration), "--eval-data", str(digits.evaluation), "--out", str(taken)])
    _assert_rejected(code, capsys.readouterr().err.strip(), taken, "exists and is not a folder", quantmill_home)


# Class: reserved names. MLflow reserves 'latest' and version-like aliases; refused at the door.
@pytest.mark.parametrize("alias", ["latest", "Latest", "v3", "not/a name"])
def test_aliases_the_registry_would_refuse(capsys, digits, quantmill_home, alias):
    code = main(["run", str(digits.model), "--task", "classification", "--calibration-data", str(digits.calibration),
                 "--eval-data", str(digits.evaluation), "--alias", alias])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT and err.startswith(f"quantmill: error: alias {alias!r} cannot be set in MLflow's registry: ")
    assert err.count("\n") == 0 and not (quantmill_home / "mlflow.db").exists()


def _sparse_config(tmp_path: Path) -> Path:
    model = tmp_path / "lm"
    model.mkdir()
    with open(model / "config.json", "wb") as handle:
        handle.truncate(2 * 1024 ** 3)
    return model / "config.json"


def _npz_declaring_447_gib(tmp_path: Path) -> Path:
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1_875_000_000, 1, 8, 8)})
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pixels.npy", np.lib.format.MAGIC_PREFIX + b"\x02\x00" + header.getvalue()[8:] + b"\0" * 64)
    return path


# Class: oversized files. A configuration or an array header that declares more than any
# model's is refused before it is read whole or allocated.
@pytest.mark.parametrize(("make", "role", "problem"), [
    (_sparse_config, "model", "larger than 4 MiB: not a model configuration"),
    (_npz_declaring_447_gib, "calibration", "array 'pixels.npy' declares shape (1875000000, 1, 8, 8) of float32"),
], ids=["config.json", "npz-header"])
def test_oversized_files(capsys, digits, tiny_llama, tmp_path, quantmill_home, make, role, problem):
    bad = make(tmp_path)
    started = time.monotonic()
    if role == "model":
        code = main(["run", str(bad.parent), "--task", "language-modeling", "--calibration-data",
                     str(tiny_llama.train_text), "--eval-data", str(tiny_llama.heldout_text)])
        _assert_rejected(code, capsys.readouterr().err.strip(), bad, problem, quantmill_home)
    else:
        _assert_rejected(*_run(capsys, digits.model, bad, digits.evaluation), bad, problem, quantmill_home)
    assert time.monotonic() - started < 10


# Class: symbolic links where quantmill writes. Whatever --out is, or holds, as a link would
# send report and artifacts elsewhere.
@pytest.mark.parametrize("link", ["out", "inside"])
def test_out_with_symbolic_links(capsys, digits, tmp_path, quantmill_home, link):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    if link == "out":
        out.symlink_to(elsewhere, target_is_directory=True)
    else:
        out.mkdir()
        (out / "artifacts").symlink_to(elsewhere, target_is_directory=True)
    code = main(["run", str(digits.model), "--task", "classification", "--calibration-data", str(digits.calibration),
                 "--eval-data", str(digits.evaluation), "--out", str(out)])
    _assert_rejected(code, capsys.readouterr().err.strip(), out, "symbolic link", quantmill_home)
    assert not any(elsewhere.iterdir())


# Class: remote code. A model that maps its classes to code it ships (auto_map) is refused at
# the door, in config.json or in tokenizer_config.json, before anything loads or converts it.
@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_a_language_model_shipping_its_own_code(capsys, tiny_llama, tmp_path, quantmill_home, file):
    import json

    model = tmp_path / "lm"
    model.mkdir()
    for part in tiny_llama.model_dir.iterdir():
        (model / part.name).symlink_to(part)
    config = json.loads((tiny_llama.model_dir / file).read_text()) if (tiny_llama.model_dir / file).exists() else {}
    (model / file).unlink(missing_ok=True)
    (model / file).write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "modeling.Mine"}}))
    code = main(["run", str(model), "--task", "language-modeling", "--calibration-data", str(tiny_llama.train_text),
                 "--eval-data", str(tiny_llama.heldout_text)])
    _assert_rejected(code, capsys.readouterr().err.strip(), model / file,
                     "the model ships its own code (auto_map: ['AutoModelForCausalLM']); quantmill never runs it", quantmill_home)
