"""The tiny Llama trained here on this CPU, in one run: llama.cpp with F16, Q8_0 and Q4_K_M,
and transformers with the FP32 checkpoint and its AWQ W4A16 version (llm-compressor).

Prints prompt-processing and decode tokens/s, load time, peak memory, size, the decode bound
from measured memory bandwidth (weight bytes read per token / bandwidth) and the fraction of
it reached, and each format's perplexity increase over the full-precision model. Speed
ratios compare each format with full precision on the same runtime. With --append-table,
appends decoder-lm rows to benchmark_tables/decoder_lm_cpu.csv.

    .venv/bin/python benchmarks/decoder_lm_cpu.py [--append-table]
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path

from quantmill.benchmark_table import SHIPPED_TABLE_DIR, TableRow, append_rows
from quantmill.exporters.gguf import SCHEMES, convert_to_gguf, quantize_gguf
from quantmill.formats import LM_FORMATS
from quantmill.hardware import local_cpu
from quantmill.lm_benchmark import benchmark_gguf, benchmark_transformers, memory_bandwidth_bytes_per_s
from quantmill.lm_evaluation import compare, llama_cpp_logits, token_windows, torch_logits
from quantmill.quantizers.awq import quantize_awq
from quantmill.tracking import quantmill_home
from quantmill.zoo.tiny_llama import build_tiny_llama

TABLE = SHIPPED_TABLE_DIR / "decoder_lm_cpu.csv"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=64, help="held-out windows of 128 tokens for perplexity")
    parser.add_argument("--append-table", action="store_true")
    args = parser.parse_args()
    hardware = local_cpu("llama.cpp")
    lm = build_tiny_llama(quantmill_home() / "models")
    print(f"hardware: {hardware.describe()}")
    print(f"model: {lm.model_dir} held-out perplexity {lm.heldout_perplexity:.1f} (unigram {lm.unigram_perplexity:.1f})")
    print(f"memory bandwidth (numpy copy): {memory_bandwidth_bytes_per_s() / 1e9:.1f} GB/s")
    windows = token_windows(lm.model_dir, lm.heldout_text, args.windows)
    reference = torch_logits(lm.model_dir, windows)
    fp32_bytes = sum(p.stat().st_size for p in lm.model_dir.glob("*.safetensors"))
    with tempfile.TemporaryDirectory(prefix="quantmill-llama-") as scratch:
        paths = {"gguf-f16": convert_to_gguf(lm.model_dir, Path(scratch) / "f16.gguf")}
        for fmt in SCHEMES:
            paths[fmt] = quantize_gguf(paths["gguf-f16"], Path(scratch) / f"{fmt}.gguf", SCHEMES[fmt])
        quality = {fmt: compare(reference, llama_cpp_logits(path, windows), windows) for fmt, path in paths.items()}
        calibration = token_windows(lm.model_dir, lm.train_text, 64)
        checkpoints = {"fp32": lm.model_dir, "awq-w4a16": quantize_awq(lm.model_dir, Path(scratch) / "awq", calibration)}
        quality |= {fmt: compare(reference, torch_logits(path, windows), windows) for fmt, path in checkpoints.items()}
        measured = benchmark_gguf(paths) | benchmark_transformers(checkpoints)
    same_runtime = {fmt: "fp32" if fmt in checkpoints else "gguf-f16" for fmt in measured}
    print("tg x full: decode tokens/s over full precision on the same runtime (gguf-f16 on llama.cpp, fp32 on transformers)")
    print(f"\n{'format':<12} {'ppl':>7} {'+ppl %':>7} {'agree %':>8} {'KL':>8} {'pp tok/s':>9} {'tg tok/s':>9} "
          f"{'bound':>8} {'of bound':>8} {'load ms':>8} {'RSS MB':>7} {'MB':>6} {'tg x full':>9}")
    for fmt, bench in measured.items():
        q = quality[fmt]
        print(f"{fmt:<12} {q.quantized_metric:>7.2f} {q.accuracy_drop:>7.2f} {q.secondary['top1_agreement']:>8.2f} "
              f"{q.secondary['mean_kl']:>8.5f} {bench.prompt_tokens_per_s:>9.0f} {bench.decode_tokens_per_s:>9.0f} "
              f"{bench.decode_bound_tokens_per_s:>8.0f} {bench.fraction_of_bound:>8.1%} {bench.load_ms:>8.1f} "
              f"{bench.peak_rss_bytes / 1e6:>7.1f} {bench.size_bytes / 1e6:>6.2f} "
              f"{bench.decode_tokens_per_s / measured[same_runtime[fmt]].decode_tokens_per_s:>9.2f}")
    if args.append_table:
        stamp = datetime.date.today().isoformat()
        rows = tuple(
            TableRow("decoder-lm", "cpu", fmt, round(quality[fmt].accuracy_drop, 3),
                     round(fp32_bytes / measured[fmt].size_bytes, 3),
                     round(measured[fmt].decode_tokens_per_s / measured[same_runtime[fmt]].decode_tokens_per_s, 3), 1,
                     f"benchmarks/decoder_lm_cpu.py on {hardware.cpu} {hardware.cores} cores "
                     f"{'+'.join(hardware.isa)} {stamp} (tiny-llama; drop = % perplexity increase)")
            for fmt in LM_FORMATS
        )
        append_rows(TABLE, rows)
        print(f"\nappended {len(rows)} rows to {TABLE}")


if __name__ == "__main__":
    main()
