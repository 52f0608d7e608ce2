"""The quantize-model flow: one model version of any kind (ONNX classifier, Hugging Face
encoder, Hugging Face causal LM) through every stage, from resolution to gate."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from quantmill.attempts import Attempt
from quantmill.benchmark_table import SHIPPED_TABLE_DIR
from quantmill.calibration import FAIL
from quantmill.formats import Step, baseline_for, baselines_for, get_format
from quantmill.formats.base import NoOptions
from quantmill.gate import best_for_objective, chosen_attempt
from quantmill.goal import goal_for
from quantmill.isolation import failure_details
from quantmill.metrics import budget_for
from quantmill.models import Model
from quantmill.provenance import artifact_metadata
from quantmill.report import build_report
from quantmill.speed import check_objective
from quantmill.state import output_dir, quantmill_home, run_dir
from tasks.benchmark import benchmark_on_pool_task, benchmark_task, hardware_task
from tasks.calibration import load_data_task, subsample_task, validate_calibration_task
from tasks.evaluate import evaluate_task, reference_outputs_task
from tasks.export import export_task
from tasks.gate import gate_task
from tasks.quantize import quantize_attempt, sensitivity_task
from tasks.record import record_task
from tasks.resolve import resolve_model_task
from tasks.select import select_formats_task


@flow(name="quantize-model", persist_result=True, result_serializer="json")
def quantize_model(
    model: str,
    task: str,
    calibration_data: str,
    eval_data: str,
    target: str = "cpu",
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
    max_size_mb: float | None = None,
    max_bits_per_weight: float | None = None,
    max_latency_ms: float | None = None,
) -> dict:
    """Quantize model for target and return the report (also written to out_dir/report.json).

    The budget is in the task's unit: max_accuracy_drop in points for classification and
    embedding, max_ppl_increase in % of perplexity for language modeling (giving the other
    one is an error); max_kld, for language models, also bounds the mean KL divergence of the
    next-token distribution from full precision's (nats). resolved, a Model.to_dict() of model made by the caller, skips
    resolving it again. objective (throughput, latency or size; speed.OBJECTIVES) is what the
    gate judges speed by.

    search_seconds > 0 searches instead of stopping at the first attempt within budget:
    candidates go on being tried until that many seconds of attempts have passed; every
    attempt is benchmarked alike; the one within budget that best serves objective is
    chosen (gate.best_for_objective), then measured again against its baseline, and the
    gate judges that fresh measurement, so the pick and the judgment never share noise.
    A goal for the search (at most one of max_size_mb, max_bits_per_weight, max_latency_ms;
    quantmill.goal) picks, instead, the lowest drop among the attempts within budget that
    reach it; the gate checks the fresh measurement against it too.

    Each candidate format is tried along its escalation ladder until an attempt is within
    budget; an attempt that fails is recorded and the ladder goes on. Stops before
    quantizing when the calibration data fails validation. Benchmarks in this process, or,
    with benchmark_on (hardware targets, each a work pool with a benchmark-on-hardware
    deployment), on each pool's worker: target always among them, and a pool whose run no
    worker takes within worker_wait_seconds is reported not benchmarked. The gate decides
    on target's measurements. Registers the chosen artifact in MLflow only when the gate
    passes and register_model is set. Attempts and the report go to out_dir/runs/<flow run
    id>/; the report is also written to out_dir/report.json.
    """
    logger = get_run_logger()
    budget = budget_for(task, max_accuracy_drop, max_ppl_increase, max_kld)
    check_objective(objective)
    goal = goal_for(max_size_mb, max_bits_per_weight, max_latency_ms, search_seconds)
    out = output_dir(out_dir)
    run_out = run_dir(out, str(flow_run.id))
    ref = Model.from_dict(resolved) if resolved else resolve_model_task(model, task, quantmill_home() / "work")
    # The kind's primary baseline (the report's headline); each attempt is measured against
    # full precision on its own runtime.
    baseline_format = baseline_for(ref.kind).name
    candidates = select_formats_task(ref, target, budget, Path(table_dir))
    hardware = hardware_task([baseline_format, *(c.format for c in candidates)])
    calibration = load_data_task(ref, Path(calibration_data))
    evaluation = load_data_task(ref, Path(eval_data), task)
    verdict = validate_calibration_task(ref, calibration, evaluation)
    logger.info("calibration %s: %s", verdict.status, "; ".join(verdict.reasons) or "all checks passed")

    attempts: list[Attempt] = []
    failures: list[dict] = []
    measured = []
    calib = None
    scores: tuple = ()
    baseline = None
    search = None
    if verdict.status != FAIL:
        work = quantmill_home() / "work" / ref.sha256[:16]
        calib = subsample_task(ref, calibration)
        reference = reference_outputs_task(ref, evaluation)
        tried: set = set()

        def attempt(step: Step) -> Attempt | None:
            if (step.format, step.options) in tried:
                return None
            tried.add((step.format, step.options))
            index = len(attempts) + len(failures) + 1
            description = f"{step.format} {step.options.describe()}".strip()
            logger.info("attempt %d: %s (%s)", index, description, step.reason)
            try:
                quantized = quantize_attempt(step.format, ref, step.options, calib, work)
                result = evaluate_task(step.format, quantized, evaluation, reference, task)
                artifact = export_task(
                    step.format, quantized, run_out / "attempts" / f"{index:02d}-{step.format}",
                    artifact_metadata(step.format, step.options, ref.uri, ref.sha256, ref.version, calib.sha256),
                )
            except Exception as err:  # one failing attempt is evidence; the ladder goes on
                reason = f"{type(err).__name__}: {err}"
                logger.warning("attempt %d (%s) failed: %s", index, description, reason)
                failures.append({"index": index, "format": step.format, "description": description, "reason": reason,
                                 **failure_details(err)})
                return None
            made = Attempt(index, step.format, step.options, step.reason, artifact, result, None,
                           baselines_for(ref.kind, [step.format])[step.format])
            attempts.append(made)
            return made

        def run_until_within(steps) -> bool:
            return any((made := attempt(step)) is not None and budget.meets(made.evaluation)
                       for step in steps)

        searching_until = time.monotonic() + search_seconds
        for candidate in candidates:
            if attempts and search_seconds and time.monotonic() > searching_until:
                logger.info("search: %g s of attempts passed; %s and the rest not tried", search_seconds, candidate.format)
                break
            fmt = get_format(candidate.format)
            if run_until_within(fmt.ladder(candidate.reason, hardware)):
                if search_seconds:
                    continue
                break
            tried_here = [a for a in attempts if a.format == fmt.name]
            if fmt.scans_sensitivity and tried_here:
                best = min(tried_here, key=lambda a: a.evaluation.accuracy_drop).options
                scores = sensitivity_task(fmt.name, ref, best, calib, evaluation, reference, task, work)
                if run_until_within(fmt.exclusion_steps(best, scores)) and not search_seconds:
                    break
        if search_seconds:
            # Around each attempt within budget, the mixes of precision its format offers,
            # while the search's time lasts: the attempts it adds may be smaller or better.
            for made in [a for a in attempts if budget.meets(a.evaluation)]:
                for step in get_format(made.format).search_moves(made.options):
                    if time.monotonic() > searching_until:
                        logger.info("search: %g s of attempts passed; %s not tried", search_seconds, step.reason)
                        break
                    attempt(step)

        if attempts:
            bases = dict.fromkeys([baseline_format, *(a.baseline_format for a in attempts)])
            models = {name: (name, quantize_attempt(name, ref, NoOptions(), None, work)) for name in bases}
            models |= {str(a.index): (a.format, a.artifact.path) for a in attempts}
            shipping = chosen_attempt(attempts, budget)
            # A search benchmarks every attempt alike; its pick is measured again below.
            judged = None if shipping is None or search_seconds else (str(shipping.index), shipping.baseline_format)

            def measure(chosen_models: dict, judged: tuple[str, str] | None, targets: list[str], purpose: str = "") -> list:
                if benchmark_on is None:
                    return [benchmark_task(target, chosen_models, evaluation, benchmark_seconds, judged, objective)]
                parameters = {
                    "model": ref.to_dict(), "eval_data": str(Path(eval_data).resolve()), "benchmark_seconds": benchmark_seconds,
                    "models": {label: {"format": name, "path": str(path)} for label, (name, path) in chosen_models.items()},
                    "judged": None if judged is None else list(judged), "objective": objective,
                }
                futures = [benchmark_on_pool_task.submit(t, {**parameters, "target": t}, worker_wait_seconds, purpose)
                           for t in targets]
                return [f.result() for f in futures]

            measured = measure(models, judged, list(dict.fromkeys([target, *(benchmark_on or [])])))
            for result in measured:
                logger.info("%s: %s", result.target, result.hardware.describe() if result.measured else f"not benchmarked: {result.reason}")
            primary = next(m for m in measured if m.target == target)
            # An attempt whose benchmark crashed is a failed attempt; a crashed baseline fails
            # every attempt measured against it.
            lost = [a for a in attempts if {str(a.index), a.baseline_format} & set(primary.failed)]
            failures += [{"index": a.index, "format": a.format, "description": f"{a.format} {a.options.describe()}".strip(),
                          **primary.failed.get(str(a.index), primary.failed.get(a.baseline_format, {}))} for a in lost]
            attempts = [a for a in attempts if a not in lost]
            if primary.measured and attempts:
                hardware = primary.hardware
                baseline = primary.benchmarks.get(baseline_format)
                attempts = [replace(a, benchmark=primary.benchmarks[str(a.index)], baseline=primary.benchmarks[a.baseline_format])
                            for a in attempts]
                if search_seconds:
                    search = best_for_objective(attempts, budget, objective, goal, ref.parameters)
                if search is not None:
                    logger.info("search chose attempt %d: %s", search.index, search.why)
                    pick = next(a for a in attempts if a.index == search.index)
                    again = measure({str(pick.index): models[str(pick.index)], pick.baseline_format: models[pick.baseline_format]},
                                    (str(pick.index), pick.baseline_format), [target], "-confirm")[0]
                    if again.measured and not again.failed:
                        attempts = [replace(a, benchmark=again.benchmarks[str(a.index)], baseline=again.benchmarks[a.baseline_format])
                                    if a.index == pick.index else a for a in attempts]

    gate = gate_task(verdict, tuple(attempts), budget, hardware.describe(), objective,
                     None if search is None else search.index, goal, ref.parameters)
    report = build_report(
        model=ref, task=task, target=target, budget=budget, hardware=hardware, candidates=candidates,
        calibration=verdict, calibration_data=calibration, evaluation_data=evaluation,
        baseline_format=baseline_format, baseline=baseline, attempts=tuple(attempts), sensitivity=scores,
        gate=gate, failures=tuple(failures), targets=tuple(measured), objective=objective, search=search,
    )
    return record_task(report, run_out, register_model, alias or target, calib, latest_dir=out)
