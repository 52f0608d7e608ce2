"""The table of benchmarks/gpu_quality.sh's device run: per GGUF type of SmolLM2-135M, with
CUDA kernels, llama-perplexity's perplexity, KL divergence from the F16 GGUF (mean, median,
99th percentile), same-top-token rate, and llama-bench's tg128 over F16 (mean and standard
deviation of its repetitions). With --append-table, appends gpu rows to
benchmark_tables/decoder_lm_gpu.csv.

    .venv/bin/python benchmarks/gpu_quality.py OUT [--append-table]
"""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path

from quantmill.benchmark_table import SHIPPED_TABLE_DIR, TableRow, append_rows, table_script_parser
from quantmill.llama_perplexity import parse_kl_divergence

FILES = ("Q3_K_M", "Q3_K_M-imatrix", "Q4_K_M", "Q4_K_M-imatrix", "Q5_K_M", "Q6_K", "Q8_0")


def main() -> None:
    parser = table_script_parser(__doc__)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    gpu, driver, memory = (s.strip() for s in (args.out / "gpu.txt").read_text().split(","))
    sizes = {m.group(2): int(m.group(1)) for m in re.finditer(r"\s(\d+)\s+\w+\s+\d+\s+[\d:]+\s+(\S+)\.gguf",
                                                             (args.out / "sizes.txt").read_text())}
    bench = {}
    for record in json.loads((args.out / "llama-bench.json").read_text()):
        if record["n_gen"] > 0:
            bench[Path(record["model_filename"]).stem] = (record["avg_ts"], record["stddev_ts"])
    base_tg, base_sd = bench["f16"]
    print(f"{gpu}, driver {driver}, {memory}; llama.cpp (llama-cpp-python 0.3.36's) built with CUDA, -ngl 99")
    print("SmolLM2-135M-Instruct; base: F16 requantized from the package's Q4_1; llama-perplexity -c 512 on held-out prose")
    print(f"\n{'file':<16} {'MB':>6} {'PPL':>8} {'+PPL %':>7} {'KLD mean':>9} {'median':>8} {'p99':>7} {'same top %':>10} "
          f"{'tg128 tok/s':>14} {'x F16':>6}")
    rows = []
    stamp = datetime.date.today().isoformat()
    for name in FILES:
        kld = parse_kl_divergence((args.out / f"{name}.log").read_text(), name)
        tg = bench.get(name)
        ratio = tg[0] / base_tg if tg else math.nan
        spread = f"{tg[0]:>7.0f}±{tg[1]:<6.0f}" if tg else f"{'-':>14}"
        increase = 100 * (kld.perplexity / kld.base_perplexity - 1)
        print(f"{name:<16} {sizes[name] / 1e6:>6.1f} {kld.perplexity:>8.3f} {increase:>7.2f} {kld.mean_kld:>9.5f} "
              f"{kld.median_kld:>8.5f} {kld.p99_kld:>7.4f} {kld.same_top:>10.2f} {spread} {ratio:>6.2f}")
        if tg and "imatrix" not in name:
            rows.append(TableRow(
                "decoder-lm", "gpu", f"gguf-{name.lower()}", round(increase, 3), round(sizes["f16"] / sizes[name], 3),
                round(ratio, 3), 1,
                f"benchmarks/gpu_quality.sh on {gpu} (driver {driver}) {stamp} (SmolLM2-135M-Instruct, reference F16 "
                f"requantized from its Q4_1; quality by llama-perplexity --kl-divergence with CUDA, -c 512; speed "
                f"llama-bench tg128 over F16 in the same run, {base_tg:.0f}±{base_sd:.0f} tok/s)",
                f"{gpu} | host CPU not recorded", "SmolLM2-135M-Instruct", False, round(kld.mean_kld, 5)))
    print(f"{'f16':<16} {sizes['f16'] / 1e6:>6.1f} {'(base)':>8} {'':>7} {'':>9} {'':>8} {'':>7} {'':>10} "
          f"{base_tg:>7.0f}±{base_sd:<6.0f} {1.0:>6.2f}")
    if args.append_table:
        append_rows(SHIPPED_TABLE_DIR / "decoder_lm_gpu.csv", tuple(rows))
        print(f"\nappended {len(rows)} rows")


if __name__ == "__main__":
    main()
