"""The `quantmill` command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from quantmill.errors import InputError, QuantmillError
from quantmill.goal import goal_for
from quantmill.isolation import stop_workers
from quantmill.metrics import METRICS, budget_for
from quantmill.models import Model, prepare_data, resolve_model
from quantmill.speed import OBJECTIVES, THROUGHPUT, check_objective
from quantmill.state import quantmill_home
from quantmill.targets import HOST, TARGETS
from quantmill.tracking.registry import check_alias

EXIT_CODES = {"passed": 0, "failed": 1, "manual_review": 3}
EXIT_BAD_INPUT = 2
SIGTERM_GRACE_S = 20.0
RESULTS_BLOCK = "s3-bucket/quantmill-results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantmill", description="Quantize a model end to end, with evidence.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="quantize, evaluate, benchmark, record and gate one model")
    run.add_argument("model", help="an ONNX file, a Hugging Face encoder or causal-LM directory, "
                                   "or models:/NAME/VERSION | models:/NAME@ALIAS")
    run.add_argument("--task", choices=list(METRICS), required=True)
    run.add_argument("--calibration-data", required=True, type=Path, help=".npz or .jsonl; plain text for language models")
    run.add_argument("--eval-data", required=True, type=Path, help=".npz or .jsonl; plain text for language models")
    run.add_argument("--target", default=HOST.name, choices=list(TARGETS))
    run.add_argument("--max-accuracy-drop", type=float, help="classification, embedding: budget in metric points (default 1)")
    run.add_argument("--max-ppl-increase", type=float, help="language modeling: budget in %% perplexity increase (default 5)")
    run.add_argument("--max-kld", type=float, help="language modeling: also bound the mean KL divergence from full "
                                                   "precision's next-token distribution (nats; default: no bound)")
    run.add_argument("--out", type=Path, default=Path("out"), help="folder for report.json and artifacts")
    run.add_argument("--no-register", action="store_true", help="record the MLflow run but register nothing")
    run.add_argument("--alias", help="alias for a registered passing model (default: the target)")
    run.add_argument("--benchmark-table", type=Path, help="folder of measured-table CSVs (default: the shipped benchmark_tables/)")
    run.add_argument("--benchmark-seconds", type=float, default=1.0, help="timed seconds per batch size")
    run.add_argument("--search-seconds", type=float, default=0.0,
                     help="search: go on trying candidates for this many seconds and ship the attempt within budget "
                          "that best serves --objective, measured again (default 0: the first within budget)")
    run.add_argument("--max-size-mb", type=float, help="search goal: an artifact of at most this many MB, the lowest "
                                                       "drop among those that reach it ships (needs --search-seconds)")
    run.add_argument("--max-bits-per-weight", type=float, help="search goal: at most this many bits per parameter")
    run.add_argument("--max-latency-ms", type=float, help="search goal: at most this many ms per sample (per decoded "
                                                          "token, for language models) at batch 1")
    run.add_argument("--objective", default=THROUGHPUT, choices=list(OBJECTIVES),
                     help="what speed the gate judges: throughput at the serving batch (default), latency at batch 1, "
                          "or size (smaller and not slower)")
    webhook = commands.add_parser("webhook", help="the MLflow registry webhook that starts quantize-model runs")
    action = webhook.add_subparsers(dest="webhook_command", required=True)
    serve = action.add_parser("serve", help="receive MLflow's webhook deliveries and emit Prefect events")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback; 0.0.0.0 for a container network)")
    serve.add_argument("--port", type=int, default=8765)
    register = action.add_parser("register", help="create or update the MLflow webhook pointing at the receiver")
    register.add_argument("url", help="the receiver's URL as MLflow's server reaches it, e.g. http://quantmill-webhook:8765/")
    scan = commands.add_parser(
        "sensitivity", help="the layerwise sensitivity scan on its own: quantize one layer group at a time, rank the "
                            "groups by the metric drop, print the table and save it as CSV and JSON")
    scan.add_argument("model", help="an ONNX file or a Hugging Face encoder directory, a path or models:/NAME/VERSION")
    scan.add_argument("--task", choices=list(METRICS), required=True)
    scan.add_argument("--calibration-data", required=True, type=Path, help=".npz or .jsonl")
    scan.add_argument("--eval-data", required=True, type=Path, help=".npz or .jsonl")
    scan.add_argument("--format", help="a format that scans sensitivity (default: the first the model's kind offers)")
    scan.add_argument("--out", type=Path, default=Path("out"), help="folder for sensitivity.csv and sensitivity.json")
    table = commands.add_parser(
        "table", help="the benchmark table format selection reads (benchmark_tables/) with every row quantmill runs "
                      "logged to MLflow, aggregated per family x hardware x format (median, spread, n)")
    table.add_argument("--benchmark-table", type=Path, help="folder of measured-table CSVs (default: the shipped benchmark_tables/)")
    table.add_argument("--runs-only", action="store_true", help="only the rows logged by runs, not the shipped table")
    commands.add_parser(
        "crash-detection",
        help="create the Prefect automation that marks a flow run Crashed when its heartbeats stop "
             "(workers need PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30)",
    )
    commands.add_parser(
        "results-storage",
        help=f"save the Prefect block {RESULTS_BLOCK} (task results and cache records on the S3 of QUANTMILL_S3_*)",
    )
    return parser


def check_out(out: Path, what: str) -> None:
    """Create the --out folder out (for what) and check that it takes a file. Raises
    InputError naming it when it is not a folder or cannot be written, or when it is, or
    holds, a symbolic link (what quantmill writes there would land wherever a link points)."""
    if out.is_symlink():
        raise InputError(out, f"is a symbolic link; --out names a real folder for {what}, which links would redirect")
    if out.exists() and not out.is_dir():
        raise InputError(out, f"exists and is not a folder (--out names the folder for {what})")
    links = sorted(p.name for p in out.iterdir() if p.is_symlink()) if out.is_dir() else []
    if links:
        raise InputError(out, f"holds symbolic links ({', '.join(links)}); what quantmill writes there would follow them")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as err:
        raise InputError(out, f"cannot write there ({err.strerror or err})") from None


def preflight(args: argparse.Namespace) -> Model:
    """Check the budget, the model and both data files before any orchestration starts, so
    bad input ends in one line naming the file; return the resolved model, which the flow
    takes as it is. Raises QuantmillError."""
    budget_for(args.task, args.max_accuracy_drop, args.max_ppl_increase, args.max_kld)
    check_objective(args.objective, args.benchmark_seconds)
    if args.alias is not None:
        check_alias(args.alias)
    goal_for(args.max_size_mb, args.max_bits_per_weight, args.max_latency_ms, args.search_seconds)
    check_out(args.out, "report.json and artifacts")
    model = resolve_model(args.model, args.task, quantmill_home() / "work")
    # Prepared here once; the flow in this process takes them as they are.
    prepare_data(model, args.calibration_data)
    prepare_data(model, args.eval_data, args.task)
    return model


def _start_temporary_api(started: list) -> threading.Thread | None:
    """With no Prefect API configured, start Prefect's temporary server in a thread, add the
    server to started and return the thread; None when PREFECT_API_URL names a server.

    Prefect starts the same server (one per process) at the flow's first call; started here,
    its 8 s come up beside the model's resolving and the flow's imports instead of after
    them. A failure here is left to that first call, which starts it again and raises."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    started.append(server)

    def start() -> None:
        try:
            server.start()
        except Exception:  # the flow's first call starts it again and raises there
            pass

    thread = threading.Thread(target=start, name="prefect-temporary-api", daemon=True)
    thread.start()
    return thread


def stop_started_processes(servers: list) -> None:
    """Stop the native-code workers, and the Prefect temporary servers in servers."""
    stop_workers()
    for server in servers:
        server.stop()


def _exit_cleanly_on_sigterm(servers: list):
    # Python's default for SIGTERM ends the process at once, skipping finally blocks and
    # atexit, which would leave the temporary server and the workers running. SIGTERM becomes
    # a SystemExit instead, which unwinds the run (Prefect marks it crashed); if the unwinding
    # hangs, the processes are stopped here and the process ends anyway.
    def on_sigterm(signum, frame):
        def hard_exit() -> None:
            stop_started_processes(servers)
            os._exit(128 + signum)

        signal.signal(signal.SIGTERM, lambda *_: None)
        timer = threading.Timer(SIGTERM_GRACE_S, hard_exit)
        timer.daemon = True
        timer.start()
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, on_sigterm)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code: 0 passed, 1 failed, 3 manual review,
    2 bad input."""
    args = _parser().parse_args(argv)
    if args.command == "webhook":
        return _webhook(args)
    if args.command == "results-storage":
        print(save_results_block())
        return 0
    if args.command == "crash-detection":
        from flows.automations import ensure_crash_automation

        print(ensure_crash_automation())
        return 0
    if args.command == "sensitivity":
        return _sensitivity(args)
    if args.command == "table":
        return _table(args)
    try:
        model = preflight(args)
    except QuantmillError as err:
        print(f"quantmill: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # Every check above ran before anything was started; from here on, whatever the run
    # started (Prefect's temporary server, the native-code workers) is stopped on every way
    # out: the end, an exception, Ctrl-C, SIGTERM.
    started: list = []
    previous = _exit_cleanly_on_sigterm(started)
    api = _start_temporary_api(started)
    try:
        return _run(args, model, api)
    finally:
        stop_started_processes(started)
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, model: Model, api: threading.Thread | None) -> int:
    from flows.quantize_model import quantize_model

    if api is not None:
        api.join()

    report = quantize_model(
        model=args.model, task=args.task, calibration_data=str(args.calibration_data.resolve()),
        eval_data=str(args.eval_data.resolve()), target=args.target, max_accuracy_drop=args.max_accuracy_drop,
        max_ppl_increase=args.max_ppl_increase, max_kld=args.max_kld, out_dir=str(args.out.resolve()), register_model=not args.no_register,
        alias=args.alias, benchmark_seconds=args.benchmark_seconds, resolved=model.to_dict(), objective=args.objective,
        search_seconds=args.search_seconds, max_size_mb=args.max_size_mb, max_bits_per_weight=args.max_bits_per_weight,
        max_latency_ms=args.max_latency_ms,
        **({"table_dir": str(args.benchmark_table.resolve())} if args.benchmark_table else {}),
    )
    from quantmill.report import render_summary

    print(render_summary(report))
    print(f"report: {(args.out / 'report.json').resolve()}")
    print(f"report.html: {(args.out / 'report.html').resolve()}")
    return EXIT_CODES[report["gate"]["status"]]


def _sensitivity(args: argparse.Namespace) -> int:
    from quantmill.sensitivity_table import scan_model, scanning_format

    try:
        check_out(args.out, "sensitivity.csv and sensitivity.json")
        model = resolve_model(args.model, args.task, quantmill_home() / "work")
        fmt = scanning_format(model, args.format)
        table = scan_model(model, args.task, args.calibration_data, args.eval_data, fmt, quantmill_home() / "work" / model.sha256[:16])
        paths = table.save(args.out)
    except QuantmillError as err:
        print(f"quantmill: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(table.render())
    print("saved: " + ", ".join(str(p.resolve()) for p in paths))
    return 0


def _table(args: argparse.Namespace) -> int:
    from quantmill.benchmark_table import SHIPPED_TABLE_DIR, aggregate, format_table, load_table
    from quantmill.tracking.runs import logged_rows

    try:
        shipped = () if args.runs_only else load_table(args.benchmark_table or SHIPPED_TABLE_DIR)
        with tempfile.TemporaryDirectory(prefix="quantmill-table-") as scratch:
            logged = logged_rows(Path(scratch))
    except QuantmillError as err:
        print(f"quantmill: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{len(shipped)} shipped rows, {len(logged)} rows logged by runs")
    print(format_table(aggregate(shipped + logged)))
    return 0


def save_results_block() -> str:
    """Save (or overwrite) the s3-bucket block holding Prefect's results and cache records
    under QUANTMILL_S3_BUCKET/QUANTMILL_S3_PREFIX/prefect-results, with the endpoint and,
    when set, the AWS_* credentials; return the slug to put in
    PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK. Raises SystemExit when no bucket is configured."""
    import os

    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    from quantmill.storage import s3_from_env

    location = s3_from_env()
    if location is None:
        raise SystemExit("quantmill: error: set QUANTMILL_S3_BUCKET (and QUANTMILL_S3_ENDPOINT_URL for a non-AWS store)")
    credentials = AwsCredentials(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"), aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        region_name=os.environ.get("AWS_DEFAULT_REGION"),
        aws_client_parameters=AwsClientParameters(endpoint_url=location.endpoint_url),
    )
    block = S3Bucket(bucket_name=location.bucket, bucket_folder=f"{location.prefix}/prefect-results", credentials=credentials)
    block.save(RESULTS_BLOCK.split("/", 1)[1], overwrite=True)
    return RESULTS_BLOCK


def _webhook(args: argparse.Namespace) -> int:
    from flows.registry_webhook import check_prefect_api, secret_from_env, serve
    from quantmill.registry_events import WEBHOOK_EVENTS
    from quantmill.tracking.webhooks import ensure_registry_webhook

    secret = secret_from_env()
    if args.webhook_command == "register":
        print(ensure_registry_webhook(args.url, secret, WEBHOOK_EVENTS))
        return 0
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    prefect_api = check_prefect_api()
    server = serve(args.host, args.port, secret)
    print(f"quantmill webhook receiver on {args.host}:{server.server_port}, emitting to {prefect_api}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
