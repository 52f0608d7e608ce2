"""The quantize-model flow: one model version of any kind (ONNX classifier, Hugging Face
encoder, Hugging Face causal LM) through every stage, from resolution to gate."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from quantmill.benchmark_table import SHIPPED_TABLE_DIR
from quantmill.calibration import FAIL
from quantmill.formats import NoOptions, baseline_for, get_format
from quantmill.goal import goal_for
from quantmill.metrics import budget_for
from quantmill.models import Model
from quantmill.report import build_report
from quantmill.search import Driver, ScanSensitivity
from quantmill.speed import check_objective
from quantmill.state import output_dir, quantmill_home, run_dir
from quantmill.targets import HOST, targets_for
from tasks.attempt import make_attempt
from tasks.benchmark import hardware_task, measure
from tasks.calibration import load_data_task, subsample_task, validate_calibration_task
from tasks.evaluate import reference_outputs_task
from tasks.gate import gate_task
from tasks.quantize import quantize_attempt, sensitivity_task
from tasks.record import record_task
from tasks.resolve import resolve_model_task
from tasks.select import select_formats_task


@flow(name="quantize-model", persist_result=True, result_serializer="json")
def quantize_model(
    model: str, task: str, calibration_data: str, eval_data: str,
    target: str = HOST.name,
    max_accuracy_drop: float | None = None,
    max_ppl_increase: float | None = None,
    max_kld: float | None = None,
    out_dir: str = "out",
    register_model: bool = True,
    alias: str | None = None,
    benchmark_seconds: float = 1.0,
    table_dir: str = str(SHIPPED_TABLE_DIR),
    benchmark_on: list[str] | None = None,
    worker_wait_seconds: float = 120.0,
    resolved: dict | None = None,
    objective: str = "throughput",
    search_seconds: float = 0.0,
    max_size_mb: float | None = None, max_bits_per_weight: float | None = None, max_latency_ms: float | None = None,
) -> dict:
    """Quantize model for target and return the report (also written to out_dir/report.json).

    The budget is in the task's unit (max_accuracy_drop in points, max_ppl_increase in %;
    max_kld bounds a language model's mean KL divergence too); objective is what the gate
    judges speed by; resolved (a Model.to_dict()) skips resolving model again. Which attempts
    are made, searched (search_seconds > 0, toward a goal: max_size_mb, max_bits_per_weight
    or max_latency_ms) and judged is the driver's (quantmill.search.Driver); this flow maps
    its requests onto tasks. Stops before quantizing when calibration fails validation.
    Benchmarks here, or with benchmark_on on each of those targets' work pools (a pool no
    worker serves within worker_wait_seconds is reported not benchmarked); the gate decides
    on target's measurements, and only a passed result is registered (register_model).
    """
    logger = get_run_logger()
    budget = budget_for(task, max_accuracy_drop, max_ppl_increase, max_kld)
    check_objective(objective, benchmark_seconds)
    goal = goal_for(max_size_mb, max_bits_per_weight, max_latency_ms, search_seconds)
    out = output_dir(out_dir)
    run_out = run_dir(out, str(flow_run.id))
    targets = targets_for(target, benchmark_on)
    ref = Model.from_dict(resolved) if resolved else resolve_model_task(model, task, quantmill_home() / "work")
    # The kind's primary baseline (the report's headline); each attempt is measured against
    # full precision on its own runtime.
    baseline_format = baseline_for(ref.kind).name
    candidates = select_formats_task(ref, targets[0], budget, Path(table_dir))
    hardware = hardware_task([get_format(name) for name in [baseline_format, *(c.format for c in candidates)]])
    calibration = load_data_task(ref, Path(calibration_data))
    evaluation = load_data_task(ref, Path(eval_data), task)
    verdict = validate_calibration_task(ref, calibration, evaluation)
    logger.info("calibration %s: %s", verdict.status, "; ".join(verdict.reasons) or "all checks passed")

    driver = Driver(candidates, budget, hardware, search_seconds, logger.info)
    measured, calib, baseline, search = [], None, None, None
    if verdict.status != FAIL:
        work = quantmill_home() / "work" / ref.sha256[:16]
        calib = subsample_task(ref, calibration)
        reference = reference_outputs_task(ref, evaluation)
        while (request := driver.next_request()) is not None:
            if isinstance(request, ScanSensitivity):
                driver.scanned(sensitivity_task(request.format, ref, request.options, calib, evaluation, reference, task, work))
                continue
            try:
                driver.made(make_attempt(request, ref, calib, evaluation, reference, task, work, run_out))
            except Exception as err:  # one failing attempt is evidence; the ladder goes on
                driver.failed(request, err)

    if driver.attempts:
        models = {f.name: (f, quantize_attempt(f, ref, NoOptions(), None, work)) for f in driver.baselines(baseline_format)}
        models |= driver.artifacts()
        measured = measure(ref, models, evaluation, eval_data, targets, benchmark_on is not None, benchmark_seconds,
                           driver.judged(), objective, worker_wait_seconds)
        driver.benchmarked(primary := measured[0])  # targets[0] is the run's own target
        if primary.measured and driver.attempts:
            hardware, baseline = primary.hardware, primary.benchmarks.get(baseline_format)
            search = driver.pick(objective, goal, ref.parameters)
        if search is not None:
            again = driver.confirming(search)
            driver.confirmed(search, measure(ref, {label: models[label] for label in again}, evaluation, eval_data, targets[:1],
                                             benchmark_on is not None, benchmark_seconds, again, objective,
                                             worker_wait_seconds, "-confirm")[0])

    gate = gate_task(verdict, tuple(driver.attempts), budget, hardware.describe(), objective,
                     None if search is None else search.index, goal, ref.parameters)
    report = build_report(
        model=ref, task=task, target=target, budget=budget, hardware=hardware, candidates=candidates,
        calibration=verdict, calibration_data=calibration, evaluation_data=evaluation,
        baseline_format=baseline_format, baseline=baseline, attempts=tuple(driver.attempts), sensitivity=driver.scores,
        gate=gate, failures=tuple(driver.failures), targets=tuple(measured), objective=objective, search=search,
    )
    return record_task(report, run_out, register_model, alias or target, calib, latest_dir=out)
