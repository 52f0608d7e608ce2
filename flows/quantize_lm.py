"""The quantize-language-model flow: a decoder LM to GGUF for llama.cpp and AWQ 4-bit, the
formats made in parallel, one failing format recorded without stopping the others."""

from __future__ import annotations

from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

from prefect import flow, get_run_logger

from quantmill.attempts import Attempt
from quantmill.benchmark_table import SHIPPED_TABLE_DIR
from quantmill.calibration import FAIL, CalibrationPolicy
from quantmill.escalation import Step
from quantmill.provenance import artifact_metadata
from quantmill.quantizers.onnx_runtime import QuantizeOptions
from quantmill.report import build_report, lm_model_section
from quantmill.tracking import output_dir, quantmill_home
from tasks.benchmark import hardware_task
from tasks.calibration import validate_calibration_task
from tasks.export import export_task
from tasks.gate import gate_task
from tasks.language_model import (
    benchmark_lm_task,
    convert_gguf_task,
    evaluate_checkpoint_task,
    evaluate_gguf_task,
    quantize_awq_task,
    quantize_gguf_task,
    reference_logits_task,
    resolve_language_model_task,
    text_dataset_task,
)
from tasks.record import record_task
from tasks.select import select_formats_task


@flow(name="quantize-language-model", persist_result=True, result_serializer="json")
def quantize_language_model(
    model: str,
    calibration_data: str,
    eval_data: str,
    target: str = "cpu",
    max_ppl_increase: float = 5.0,
    out_dir: str = "out",
    register_model: bool = True,
    alias: str | None = None,
    eval_windows: int = 32,
    table_dir: str = str(SHIPPED_TABLE_DIR),
) -> dict:
    """Quantize a decoder LM to the selected GGUF formats and return the report (also
    written to out_dir/report.json). The gate metric is the relative perplexity increase
    in percent against the full-precision model on eval_windows windows of held-out text."""
    logger = get_run_logger()
    out = output_dir(out_dir)
    ref = resolve_language_model_task(model, quantmill_home() / "work")
    hardware = hardware_task(
        f"llama.cpp via llama-cpp-python {version('llama-cpp-python')}; transformers {version('transformers')} for AWQ"
    )
    candidates = select_formats_task("decoder-lm", target, max_ppl_increase, Path(table_dir))
    policy = CalibrationPolicy(min_samples=8, recommended_samples=16)
    calibration = text_dataset_task(ref, Path(calibration_data), max(eval_windows, policy.recommended_samples))
    evaluation = text_dataset_task(ref, Path(eval_data), eval_windows)
    verdict = validate_calibration_task(calibration, evaluation, policy)

    attempts, failures, baseline = [], [], None
    if verdict.status != FAIL:
        work = quantmill_home() / "work" / ref.sha256[:16]
        windows = evaluation.inputs["input_ids"]
        f16 = convert_gguf_task(ref, work / "model-f16.gguf")
        # Before the fan-out, not beside it: llm-compressor's AWQ traces the model with
        # torch.fx, which patches torch globally while it runs, and a PyTorch forward in
        # another thread at that moment fails.
        reference = reference_logits_task(ref, windows)
        chains = []
        for index, candidate in enumerate(candidates, 1):
            step = Step(QuantizeOptions(candidate.format), f"candidate: {candidate.reason}")
            if candidate.format == "awq-w4a16":
                quantized = quantize_awq_task.submit(ref, work / candidate.format, calibration)
                evaluated = evaluate_checkpoint_task.submit(quantized, reference, windows)
            else:
                quantized = quantize_gguf_task.submit(f16, work / f"{candidate.format}.gguf", candidate.format)
                evaluated = evaluate_gguf_task.submit(quantized, reference, windows)
            exported = export_task.submit(
                quantized, out / "attempts" / f"{index:02d}-{candidate.format}",
                artifact_metadata(step.options, ref.uri, ref.sha256, ref.version, calibration.sha256),
            )
            chains.append((index, step, quantized, evaluated, exported))
        for index, step, *futures in chains:
            for future in futures:
                future.wait()
            # The first stage that did not complete is the cause; later ones only inherit it.
            failed = next((f for f in futures if not f.state.is_completed()), None)
            if failed is not None:
                reason = failed.state.message or failed.state.name
                logger.warning("%s failed: %s", step.options.format, reason)
                failures.append({"format": step.options.format, "reason": reason})
                continue
            attempts.append(Attempt(index, step.options, step.reason, futures[2].result(), futures[1].result(), None))
        if attempts:
            files = {str(a.index): a.artifact.path for a in attempts}
            measured = benchmark_lm_task(
                {"f16": f16} | {k: p for k, p in files.items() if p.is_file()},
                {k: p for k, p in files.items() if p.is_dir()},
            )
            baseline = measured["f16"]
            attempts = [replace(a, benchmark=measured[str(a.index)]) for a in attempts]

    gate = gate_task(verdict, tuple(attempts), baseline, max_ppl_increase, hardware.describe())
    report = build_report(
        model=lm_model_section(ref), task="language-modeling", target=target, max_accuracy_drop=max_ppl_increase,
        hardware=hardware, candidates=candidates, calibration=verdict, calibration_data=calibration,
        evaluation_data=evaluation, baseline=baseline, attempts=tuple(attempts), sensitivity=(), gate=gate,
        baseline_format="gguf-f16", failures=tuple(failures),
    )
    return record_task(report, out, register_model, alias or target)
