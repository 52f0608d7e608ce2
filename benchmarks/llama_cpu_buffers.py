"""llama.cpp's CPU buffer types on this CPU, measured before choosing: for every GGUF type
quantmill offers, whether a 128-token batch evaluates (the case that segfaulted in ggml's AMX
kernels, llama.cpp #20824) and its prompt and decode tokens/s, with llama.cpp's extra buffer
types on (repacked weights, ggml's AMX buffer where the build has it) and off, for each
llama.cpp build given (e.g. the native build, which has AMX on an AMX CPU, and one built
without AMX). Each measurement runs in a process of its own, so a crash is a row, not the end.
Rounds interleave the configurations; ratios are against the first build with repack off.

    python benchmarks/llama_cpu_buffers.py --gguf-dir DIR --build native=LIBDIR [--build no-amx=LIBDIR] [--rounds 3]

DIR holds one MODEL-TYPE.gguf per type. Prints one line per configuration and JSON to --out.
Needs only the standard library, llama-cpp-python's Python package and quantmill.llama_buffers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quantmill.hardware import local_cpu  # noqa: E402
from quantmill.isolation import WorkerCrashed, WorkerTimeout, run_command  # noqa: E402

PROMPT, DECODE = 128, 64


def one(gguf: Path, repack: bool) -> dict:
    """Measure one GGUF in this process: a PROMPT-token batch evaluated (its logits must be
    finite), prompt tokens/s, and decode tokens/s over DECODE tokens."""
    import ctypes
    import math
    import random

    # A llama.cpp built here and loaded after numpy (whose wheel brings its own C++ runtime)
    # segfaulted in init_tokenizer on the GPU machine's host; loaded first, it does not.
    if os.environ.get("LLAMA_CPP_LIB_PATH"):
        ctypes.CDLL(os.path.join(os.environ["LLAMA_CPP_LIB_PATH"], "libllama.so"), mode=ctypes.RTLD_GLOBAL)
    from quantmill.llama_buffers import load

    llm = load(gguf, repack, n_ctx=PROMPT + DECODE + 8, n_batch=PROMPT, n_threads=os.cpu_count(), logits_all=True)
    rng = random.Random(0)
    prompt = [1] + [rng.randrange(3, llm.n_vocab()) for _ in range(PROMPT - 1)]
    llm.eval(prompt[:8])
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    prompt_s = time.perf_counter() - start
    finite = all(math.isfinite(float(x)) for x in llm.scores[PROMPT - 1][:1000])
    start = time.perf_counter()
    for _ in range(DECODE):
        llm.eval([rng.randrange(3, llm.n_vocab())])
    decode_s = time.perf_counter() - start
    return {"prompt_tps": PROMPT / prompt_s, "decode_tps": DECODE / decode_s, "finite": finite}


def quality(gguf: Path, repack: bool, text: Path, windows: int) -> dict:
    """Return the GGUF's mean negative log-likelihood over `windows` windows of PROMPT tokens
    of text (its own tokenizer; BOS where the GGUF says to add one) and its top-1 next token
    at every position, in this process."""
    import ctypes

    if os.environ.get("LLAMA_CPP_LIB_PATH"):
        ctypes.CDLL(os.path.join(os.environ["LLAMA_CPP_LIB_PATH"], "libllama.so"), mode=ctypes.RTLD_GLOBAL)
    import numpy as np

    from quantmill.llama_buffers import load

    llm = load(gguf, repack, n_ctx=PROMPT, n_batch=PROMPT, n_threads=os.cpu_count(), logits_all=True)
    bos = [llm.token_bos()] if llm._model.add_bos_token() else []
    ids = llm.tokenize(text.read_text(encoding="utf-8").encode(), add_bos=False, special=False)
    step = PROMPT - len(bos)
    nll, tokens, top = 0.0, 0, []
    for i in range(min(windows, len(ids) // step)):
        window = bos + ids[i * step:(i + 1) * step]
        llm.reset()
        llm.eval(window)
        logits = np.asarray(llm.scores[:len(window) - 1], dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        targets = np.asarray(window[1:])
        nll -= float(log_probs[np.arange(len(targets)), targets].sum())
        tokens += len(targets)
        top += logits.argmax(axis=1).tolist()
    return {"mean_nll": nll / tokens, "tokens": tokens, "top": top, "size_bytes": gguf.stat().st_size}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs=2, metavar=("GGUF", "REPACK"))
    parser.add_argument("--gguf-dir", type=Path)
    parser.add_argument("--build", action="append", default=[], help="NAME=LIBDIR (LLAMA_CPP_LIB_PATH)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quality", nargs=3, metavar=("GGUF", "REPACK", "TEXT"), help="one GGUF's perplexity (a child)")
    parser.add_argument("--text", type=Path, help="prose for perplexity and same-top-token rate against F16")
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--rows", type=Path, help="write benchmark-table rows (decoder-lm, cpu) to this CSV")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(Path(args.one[0]), args.one[1] == "on")))
        return 0
    if args.quality:
        print(json.dumps(quality(Path(args.quality[0]), args.quality[1] == "on", Path(args.quality[2]), args.windows)))
        return 0
    cpu = local_cpu("llama.cpp")
    print(f"cpu: {cpu.cpu}, {cpu.cores} cores, {' '.join(cpu.isa)}", flush=True)
    builds = dict(b.split("=", 1) for b in args.build)
    configs = [(build, repack) for build in builds for repack in ("on", "off")]
    ggufs = sorted(args.gguf_dir.glob("*.gguf"))
    results: dict = {}
    for round_ in range(args.rounds):
        for gguf in ggufs:
            for build, repack in configs:
                key = f"{gguf.stem} {build} repack-{repack}"
                if results.get(key, {}).get("crash"):
                    continue
                env = {**os.environ, "LLAMA_CPP_LIB_PATH": builds[build]}
                try:
                    out = run_command([sys.executable, __file__, "--one", str(gguf), repack], key, 600, env)
                    results.setdefault(key, {"runs": []})["runs"].append(json.loads(out.splitlines()[-1]))
                except (WorkerCrashed, WorkerTimeout) as err:
                    results[key] = {"crash": str(err), "signal": getattr(err, "signal", None)}
                    print(f"{key}: CRASH {err}", flush=True)
        print(f"round {round_ + 1} done", flush=True)
    base_build = next(iter(builds))
    lines = []
    for gguf in ggufs:
        base = results.get(f"{gguf.stem} {base_build} repack-off", {})
        for build, repack in configs:
            key = f"{gguf.stem} {build} repack-{repack}"
            r = results[key]
            if "crash" in r:
                lines.append(f"{key:<44} crashed ({r['signal']})")
                continue
            pp = statistics.median(x["prompt_tps"] for x in r["runs"])
            tg = statistics.median(x["decode_tps"] for x in r["runs"])
            r |= {"prompt_tps": pp, "decode_tps": tg, "prompt_spread": [min(x["prompt_tps"] for x in r["runs"]),
                  max(x["prompt_tps"] for x in r["runs"])], "decode_spread": [min(x["decode_tps"] for x in r["runs"]),
                  max(x["decode_tps"] for x in r["runs"])], "finite": all(x["finite"] for x in r["runs"])}
            ratio = ""
            if "runs" in base:
                bpp = statistics.median(x["prompt_tps"] for x in base["runs"])
                btg = statistics.median(x["decode_tps"] for x in base["runs"])
                ratio = f"  vs {base_build} repack-off: prompt {pp / bpp:.2f}x, decode {tg / btg:.2f}x"
            lines.append(f"{key:<44} prompt {pp:8.1f} tok/s ({r['prompt_spread'][0]:.1f}-{r['prompt_spread'][1]:.1f})  "
                         f"decode {tg:7.1f} tok/s ({r['decode_spread'][0]:.1f}-{r['decode_spread'][1]:.1f})  "
                         f"finite {r['finite']}{ratio}")
    print("\n".join(lines))
    if args.text:
        lines += _quality_rows(args, ggufs, builds, results, cpu)
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu.describe(), "results": results, "rounds": args.rounds}, indent=1))
    return 0


def _quality_rows(args, ggufs: list[Path], builds: dict, results: dict, cpu) -> list[str]:
    """Measure each GGUF's perplexity on args.text with the first build and the buffers as
    quantmill chooses them here (on), print it beside F16's with the same-top-token rate and
    the decode ratio over F16 measured above, and write benchmark-table rows to args.rows."""
    import math

    from quantmill.benchmark_table import TableRow, append_rows

    build = next(iter(builds))
    env = {**os.environ, "LLAMA_CPP_LIB_PATH": builds[build]}
    measured = {}
    for gguf in ggufs:
        out = run_command([sys.executable, __file__, "--quality", str(gguf), "on", str(args.text),
                           "--windows", str(args.windows)], f"perplexity of {gguf.stem}", 1800, env)
        measured[gguf] = json.loads(out.splitlines()[-1])
    reference = next(g for g in ggufs if g.stem.endswith("F16"))
    base = measured[reference]
    decode = {g: statistics.median(x["decode_tps"] for x in results[f"{g.stem} {build} repack-on"]["runs"]) for g in ggufs}
    lines = [f"perplexity on {args.text.name}, {base['tokens']} tokens, {build}, buffers on:"]
    rows = []
    for gguf in ggufs:
        m = measured[gguf]
        ppl = math.exp(m["mean_nll"])
        increase = 100 * (ppl / math.exp(base["mean_nll"]) - 1)
        same = 100 * sum(a == b for a, b in zip(m["top"], base["top"])) / len(base["top"])
        speedup = decode[gguf] / decode[reference]
        lines.append(f"{gguf.stem:<28} ppl {ppl:8.3f}  {increase:+7.2f} %  same top token {same:6.2f} %  "
                     f"decode {speedup:.2f}x F16")
        if gguf != reference:
            scheme = gguf.stem.rsplit("-", 1)[1].lower()
            rows.append(TableRow(
                "decoder-lm", "cpu", f"gguf-{scheme}", round(increase, 3), round(base["size_bytes"] / m["size_bytes"], 3),
                round(speedup, 3), 1,
                f"benchmarks/llama_cpu_buffers.py on {cpu.cpu} {cpu.cores} cores {'+'.join(cpu.isa)} "
                f"{time.strftime('%Y-%m-%d')} (SmolLM2-135M-Instruct requantized from its Q4_1 GGUF, F16 the reference; "
                f"drop = % perplexity increase over {base['tokens']} tokens of {args.text.name}; speedup = decode, "
                f"llama.cpp extra buffers on)", cpu.identity()))
    print("\n".join(lines), flush=True)
    if args.rows and rows:
        append_rows(args.rows, tuple(rows))
    return lines


if __name__ == "__main__":
    sys.exit(main())
