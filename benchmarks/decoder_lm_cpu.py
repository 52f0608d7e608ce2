"""The tiny Llama trained here on this CPU, in one run: every format quantmill offers for
causal LMs on the CPU (the GGUF schemes on llama.cpp, AWQ W4A16 on transformers) beside the
full-precision baselines of each runtime (F16 GGUF, the FP32 checkpoint), and each GGUF scheme's
escalation step with an importance matrix from the calibration text beside it (needs `make
llama-tools`).

Prints prompt-processing and decode tokens/s, load time, peak memory, size, the decode bound
from measured memory bandwidth (weight bytes read per token / bandwidth) and the fraction of
it reached, and each format's perplexity increase over the full-precision model. Speed
ratios compare each format with full precision on the same runtime. With --append-table,
appends decoder-lm rows to benchmark_tables/decoder_lm_cpu.csv.

    .venv/bin/python benchmarks/decoder_lm_cpu.py [--append-table]
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path

from quantmill.benchmark_table import SHIPPED_TABLE_DIR, TableRow, append_rows, table_script_parser
from quantmill.formats import baseline_for, offered
from quantmill.hardware import local_cpu
from quantmill.measure import memory_bandwidth_bytes_per_s
from quantmill.metrics import get_metric
from quantmill.models import get_kind, resolve_model
from quantmill.models.hf_causal_lm import text_dataset
from quantmill.runtimes import get_runtime
from quantmill.state import quantmill_home
from quantmill.targets import HOST
from quantmill.zoo.tiny_llama import build_tiny_llama

TABLE = SHIPPED_TABLE_DIR / "decoder_lm_cpu.csv"


def main() -> None:
    parser = table_script_parser(__doc__)
    parser.add_argument("--windows", type=int, default=64, help="held-out windows of 128 tokens for perplexity")
    args = parser.parse_args()
    lm = build_tiny_llama(quantmill_home() / "models")
    model = resolve_model(str(lm.model_dir), "language-modeling", quantmill_home() / "work")
    kind = get_kind(model.kind)
    formats = offered(model.kind, HOST)
    runtimes = dict.fromkeys([baseline_for(model.kind).runtime, kind.reference_runtime, *(f.runtime for f in formats)])
    hardware = local_cpu("; ".join(get_runtime(name).describe(HOST) for name in runtimes))
    print(f"hardware: {hardware.describe()}")
    print(f"model: {lm.model_dir} held-out perplexity {lm.heldout_perplexity:.1f} (unigram {lm.unigram_perplexity:.1f})")
    print(f"memory bandwidth (numpy copy): {memory_bandwidth_bytes_per_s() / 1e9:.1f} GB/s")
    evaluation = text_dataset(model.path, lm.heldout_text, args.windows)
    calibration = text_dataset(model.path, lm.train_text, 64)
    metric = get_metric("language-modeling")
    reference = get_runtime(kind.reference_runtime).outputs(model.path, evaluation)
    # Full precision on each runtime: the speed ratios compare like with like.
    full = {kind.reference_runtime: ("fp32", model.path)}
    with tempfile.TemporaryDirectory(prefix="quantmill-llama-") as scratch:
        baseline = baseline_for(model.kind)
        full[baseline.runtime] = (baseline.name, baseline.quantize(model, baseline.default_options(hardware), None, Path(scratch)))
        entries = {label: (runtime, path) for runtime, (label, path) in full.items()}
        for fmt in formats:
            entries[fmt.name] = (fmt.runtime, fmt.quantize(model, fmt.default_options(hardware), calibration, Path(scratch)))
            # Side by side: a format's escalation steps that calibrate what its first attempt
            # does not (GGUF with an importance matrix from the calibration text).
            for step in fmt.ladder("", hardware):
                if step.format == fmt.name and fmt.uses_calibration(step.options) \
                        and not fmt.uses_calibration(fmt.default_options(hardware)):
                    entries[f"{fmt.name} ({step.options.describe()})"] = (
                        fmt.runtime, fmt.quantize(model, step.options, calibration, Path(scratch)))
        quality = {
            label: metric.compare(reference, get_runtime(runtime).outputs(path, evaluation), evaluation)
            for label, (runtime, path) in entries.items()
        }
        measured = {}
        for runtime in runtimes:
            group = {label: path for label, (name, path) in entries.items() if name == runtime}
            measured |= get_runtime(runtime).benchmark(group, evaluation, HOST, 0.0)
    same_runtime = {label: full[runtime][0] for label, (runtime, _) in entries.items()}
    fp32_bytes = sum(p.stat().st_size for p in model.path.glob("*.safetensors"))
    print("tg x full: decode tokens/s over full precision on the same runtime "
          f"({', '.join(f'{label} on {runtime}' for runtime, (label, _) in full.items())})")
    print(f"\n{'format':<32} {'ppl':>7} {'+ppl %':>7} {'agree %':>8} {'KL':>8} {'pp tok/s':>9} {'tg tok/s':>9} "
          f"{'bound':>8} {'of bound':>8} {'load ms':>8} {'RSS MB':>7} {'MB':>6} {'tg x full':>9}")
    for label, bench in measured.items():
        q = quality[label]
        print(f"{label:<32} {q.quantized_metric:>7.2f} {q.accuracy_drop:>7.2f} {q.secondary['top1_agreement']:>8.2f} "
              f"{q.secondary['mean_kl']:>8.5f} {bench.prompt_tokens_per_s:>9.0f} {bench.decode_tokens_per_s:>9.0f} "
              f"{bench.decode_bound_tokens_per_s:>8.0f} {bench.fraction_of_bound:>8.1%} {bench.load_ms:>8.1f} "
              f"{bench.peak_rss_bytes / 1e6:>7.1f} {bench.size_bytes / 1e6:>6.2f} "
              f"{bench.decode_tokens_per_s / measured[same_runtime[label]].decode_tokens_per_s:>9.2f}")
    if args.append_table:
        stamp = datetime.date.today().isoformat()
        rows = tuple(
            TableRow("decoder-lm", HOST.name, fmt.name, round(quality[fmt.name].accuracy_drop, 3),
                     round(fp32_bytes / measured[fmt.name].size_bytes, 3),
                     round(measured[fmt.name].decode_tokens_per_s / measured[same_runtime[fmt.name]].decode_tokens_per_s, 3), 1,
                     f"benchmarks/decoder_lm_cpu.py on {hardware.cpu} {hardware.cores} cores "
                     f"{'+'.join(hardware.isa)} {stamp} (tiny-llama; drop = % perplexity increase)", hardware.identity())
            for fmt in formats
        )
        append_rows(TABLE, rows)
        print(f"\nappended {len(rows)} rows to {TABLE}")


if __name__ == "__main__":
    main()
