"""The quantize-model flow: one model version through every stage, from resolution to gate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prefect import flow, get_run_logger

from quantmill.attempts import Attempt
from quantmill.benchmark_table import SHIPPED_TABLE_DIR
from quantmill.calibration import FAIL, CalibrationPolicy
from quantmill.escalation import calibration_steps, exclusion_steps, scans_sensitivity
from quantmill.provenance import artifact_metadata
from quantmill.report import build_report, model_section
from quantmill.sensitivity import exclusion_sets
from quantmill.tracking import output_dir, quantmill_home
from tasks.benchmark import benchmark_on_pool_task, benchmark_task, hardware_task
from tasks.calibration import load_data_task, subsample_task, validate_calibration_task
from tasks.evaluate import baseline_outputs_task, evaluate_task
from tasks.export import export_task
from tasks.gate import gate_task
from tasks.quantize import quantize_attempt, sensitivity_task
from tasks.record import record_task
from tasks.resolve import inspect_task, resolve_model_task
from tasks.select import select_formats_task


@flow(name="quantize-model", persist_result=True, result_serializer="json")
def quantize_model(
    model: str,
    task: str,
    calibration_data: str,
    eval_data: str,
    target: str = "cpu",
    max_accuracy_drop: float = 1.0,
    out_dir: str = "out",
    register_model: bool = True,
    alias: str | None = None,
    benchmark_seconds: float = 1.0,
    table_dir: str = str(SHIPPED_TABLE_DIR),
    benchmark_on: list[str] | None = None,
    worker_wait_seconds: float = 120.0,
) -> dict:
    """Quantize model for target and return the report (also written to out_dir/report.json).

    Stops before quantizing when the calibration data fails validation. Benchmarks in this
    process on this machine, or, with benchmark_on (hardware targets, each a work pool with a
    benchmark-on-hardware deployment), on each pool's worker: target always among them, and
    a pool whose run no worker takes within worker_wait_seconds is reported not benchmarked.
    The gate decides on target's measurements. Registers the chosen artifact in MLflow only
    when the gate passes and register_model is set.
    """
    logger = get_run_logger()
    out = output_dir(out_dir)
    ref = resolve_model_task(model, quantmill_home() / "work")
    profile = inspect_task(ref)
    hardware = hardware_task()
    candidates = select_formats_task(profile.family, target, max_accuracy_drop, Path(table_dir))
    policy = CalibrationPolicy()
    calibration = load_data_task(Path(calibration_data), profile, ref)
    evaluation = load_data_task(Path(eval_data), profile, ref)
    verdict = validate_calibration_task(calibration, evaluation, policy)
    logger.info("calibration %s: %s", verdict.status, "; ".join(verdict.reasons) or "all checks passed")

    attempts: list[Attempt] = []
    measured = []
    calib = None
    scores: tuple = ()
    baseline = None
    if verdict.status != FAIL:
        cache = quantmill_home() / "work" / ref.sha256[:16]
        calib = subsample_task(calibration, policy)
        outputs = baseline_outputs_task(ref.onnx_path, evaluation)

        def attempt(step) -> Attempt:
            index = len(attempts) + 1
            logger.info("attempt %d: %s (%s)", index, step.options.describe(), step.reason)
            quantized = quantize_attempt(ref.onnx_path, step.options, calib, cache)
            result = evaluate_task(quantized, evaluation, outputs, task)
            artifact = export_task(
                quantized, out / "attempts" / f"{index:02d}-{step.options.format}",
                artifact_metadata(step.options, ref.uri, ref.sha256, ref.version, calib.sha256),
            )
            made = Attempt(index, step.options, step.reason, artifact, result, None)
            attempts.append(made)
            return made

        def run_until_within(steps) -> bool:
            return any(attempt(step).evaluation.accuracy_drop <= max_accuracy_drop for step in steps)

        for candidate in candidates:
            if run_until_within(calibration_steps(candidate.format, candidate.reason, not hardware.has_vnni())):
                break
            if scans_sensitivity(candidate.format):
                tried = [a for a in attempts if a.format == candidate.format]
                best = min(tried, key=lambda a: a.evaluation.accuracy_drop).options
                scores = sensitivity_task(ref.onnx_path, best, calib, evaluation, outputs, task, cache)
                if run_until_within(exclusion_steps(best, exclusion_sets(scores))):
                    break

        models = {"fp32": ref.onnx_path} | {str(a.index): a.artifact.path for a in attempts}
        if benchmark_on is None:
            measured = [benchmark_task(target, models, evaluation, benchmark_seconds)]
        else:
            parameters = {
                "models": {label: str(path) for label, path in models.items()}, "eval_data": str(Path(eval_data).resolve()),
                "tokenizer_dir": str(ref.tokenizer_dir) if ref.tokenizer_dir else None, "benchmark_seconds": benchmark_seconds,
            }
            futures = [benchmark_on_pool_task.submit(t, {**parameters, "target": t}, worker_wait_seconds)
                       for t in dict.fromkeys([target, *benchmark_on])]
            measured = [f.result() for f in futures]
        for result in measured:
            logger.info("%s: %s", result.target, result.hardware.describe() if result.measured else f"not benchmarked: {result.reason}")
        primary = next(m for m in measured if m.target == target)
        if primary.measured:
            hardware = primary.hardware
            baseline = primary.benchmarks["fp32"]
            attempts = [replace(a, benchmark=primary.benchmarks[str(a.index)]) for a in attempts]

    gate = gate_task(verdict, tuple(attempts), baseline, max_accuracy_drop, hardware.describe())
    report = build_report(
        model=model_section(ref, profile), task=task, target=target, max_accuracy_drop=max_accuracy_drop,
        hardware=hardware, candidates=candidates, calibration=verdict, calibration_data=calibration,
        evaluation_data=evaluation, baseline=baseline, attempts=tuple(attempts), sensitivity=scores, gate=gate,
        targets=tuple(measured),
    )
    return record_task(report, out, register_model, alias or target, calib)
