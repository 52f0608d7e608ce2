"""The demo: three real models registered in MLflow, each taken through the one
quantize-model flow from the registry on the embedded default (ephemeral Prefect API,
SQLite MLflow): a digits CNN and the MiniLM encoder to ONNX Runtime INT8, a Llama trained
here to GGUF for llama.cpp. In two parts, so that `make demo` runs the first while
llama-cpp-python compiles: `onnx` (the two ONNX models' flows, and the Llama trained) and
`llm` (the Llama's flow)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quantmill.models import register_source_model
from quantmill.report import render_summary
from quantmill.state import quantmill_home
from quantmill.zoo.digits import build_digits
from quantmill.zoo.minilm import minilm_dir, write_text_sets
from quantmill.zoo.smollm2 import smollm2_files

# Retrieval agreement@10 over 400 sentences moves in steps of 0.025 points per changed
# neighbour; 10 points lets INT8 through only when 9 of 10 neighbours survive quantization.
EMBEDDING_BUDGET = 10.0
CLASSIFICATION_BUDGET = 1.0
PERPLEXITY_BUDGET = 5.0
# About 18 windows of 128 SmolLM2 tokens of the language reference: enough for the gate's two
# halves (16 at least), few enough for the demo's time.
DEMO_PROSE_CHARS = 10_000


def main(argv: list[str] | None = None) -> int:
    """Build, register and quantize the demo models; print their summaries. Returns 0 when
    every flow completed, whatever its gate said (the gate's verdict is the demo)."""
    parser = argparse.ArgumentParser(prog="python -m flows.demo")
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--part", choices=("all", "onnx", "llm"), default="all",
                        help="onnx: the digits CNN's and MiniLM's flows, and the Llama trained (no llama-cpp-python "
                             "needed); llm: the Llama's flow")
    args = parser.parse_args(argv)
    from flows.quantize_model import quantize_model
    from quantmill.zoo.tiny_llama import build_tiny_llama

    data = quantmill_home() / "models"
    summaries, names = [], []
    if args.part in ("all", "onnx"):
        digits = build_digits(data / "digits")
        print(f"digits CNN trained here: held-out FP32 accuracy {digits.accuracy:.2f}%")
        calibration_text, evaluation_text = write_text_sets(data / "text")
        runs = (
            ("digits-cnn", digits.model, "classification", digits.calibration, digits.evaluation, CLASSIFICATION_BUDGET),
            ("all-minilm-l6-v2", minilm_dir(), "embedding", calibration_text, evaluation_text, EMBEDDING_BUDGET),
        )
        for name, source, task, calibration, evaluation, budget in runs:
            version = register_source_model(source, name)
            report = quantize_model(
                model=f"models:/{name}/{version}", task=task, calibration_data=str(calibration),
                eval_data=str(evaluation), max_accuracy_drop=budget, out_dir=str((args.out / name).resolve()),
            )
            summaries.append(render_summary(report))
            names.append(name)
    llama = build_tiny_llama(data)
    if args.part in ("all", "onnx"):
        print(f"tiny Llama trained here in {llama.train_seconds:.0f} s: held-out perplexity "
              f"{llama.heldout_perplexity:.1f} (unigram baseline {llama.unigram_perplexity:.1f})")
    if args.part in ("all", "llm"):
        version = register_source_model(llama.model_dir, "tiny-llama-stdlib")
        report = quantize_model(
            model=f"models:/tiny-llama-stdlib/{version}", task="language-modeling", calibration_data=str(llama.train_text),
            eval_data=str(llama.heldout_text), max_ppl_increase=PERPLEXITY_BUDGET,
            out_dir=str((args.out / "tiny-llama-stdlib").resolve()),
        )
        summaries.append(render_summary(report))
        names.append("tiny-llama-stdlib")
        # A real pretrained model, given as the GGUF its package ships (as many users have
        # only that); the demo evaluates a short stretch of prose, benchmarks/ the whole.
        smollm2 = smollm2_files(data / "prose", max_chars=DEMO_PROSE_CHARS)
        report = quantize_model(
            model=str(smollm2.gguf), task="language-modeling", calibration_data=str(smollm2.calibration_text),
            eval_data=str(smollm2.heldout_text), max_ppl_increase=PERPLEXITY_BUDGET,
            out_dir=str((args.out / "smollm2-135m").resolve()),
        )
        summaries.append(render_summary(report))
        names.append("smollm2-135m")
    print("\n\n".join(summaries))
    print(f"\nreports: {args.out.resolve()}/*/report.json; MLflow store: {quantmill_home()}")
    for name in names:
        print(f"report.html: {(args.out / name / 'report.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
