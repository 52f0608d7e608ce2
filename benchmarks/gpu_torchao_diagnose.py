"""Why quantmill's torch-cuda runtime decodes torchao's formats slower than BF16 on the
Llama-3.2-1B shape (benchmarks/results/torchao-formats-h100-2026-12-06.json) while torchao's
recipe on the Llama-3-8B shape decodes them faster: each model measured once by
torch_cuda.measure in its own process, all at the same time (so the speeds are not comparable;
the logs are the point), with PyTorch's logs of CUDA-graph decisions and recompiles. A variant
'+unwrap' first applies torchao.utils.unwrap_tensor_subclass (parametrization: the compiled
graph takes the plain tensors, not the subclass to flatten on every call). It ran at 6fd755b
(benchmarks/results/torchao-diagnose-h100-2026-12-06/); since f3e59a7 torch_cuda.measure
unwraps them itself, so there the two variants are the same.

    python benchmarks/gpu_torchao_diagnose.py --work DIR --out DIR --tokenizer DIR [--runs bf16,fp8-wo,int4-wo,fp8-wo+unwrap]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_target import make_shape  # noqa: E402

from quantmill.formats.torchao import TorchaoOptions, quantize_checkpoint  # noqa: E402

CHILD = """
import json, sys
from pathlib import Path
from quantmill.runtimes import torch_cuda
if sys.argv[2] == "unwrap":
    from torchao.utils import unwrap_tensor_subclass
    load = torch_cuda.load
    torch_cuda.load = lambda d, device="cuda": unwrap_tensor_subclass(load(d, device).requires_grad_(False))
print("RESULT", json.dumps(torch_cuda.measure(Path(sys.argv[1]), 16, 128)), flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--runs", default="bf16,fp8-wo,int4-wo,fp8-wo+unwrap")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shape = make_shape("llama-3.2-1b", args.tokenizer, args.work / "llama-3.2-1b")
    runs = {}
    for name in args.runs.split(","):
        scheme, _, how = name.partition("+")
        if scheme == "bf16":
            runs[name] = (shape, how or "as-is")
            continue
        options = TorchaoOptions(scheme, 64 if scheme == "int4-wo" else None)
        path = args.work / scheme
        runs[name] = (path if path.exists() else quantize_checkpoint(shape, options, path), how or "as-is")
    env = {**os.environ, "TORCH_LOGS": "perf_hints,recompiles,cudagraphs,graph_breaks"}
    children = {name: subprocess.Popen([sys.executable, "-c", CHILD, str(path), how], env=env, text=True,
                                       stdout=open(args.out / f"{name.replace('+', '-')}.log", "w"), stderr=subprocess.STDOUT)
                for name, (path, how) in runs.items()}
    results = {}
    for name, child in children.items():
        child.wait()
        lines = (args.out / f"{name.replace('+', '-')}.log").read_text().splitlines()
        result = next((json.loads(x[len("RESULT "):]) for x in lines if x.startswith("RESULT ")), None)
        results[name] = {"rc": child.returncode, "result": result,
                         "hints": [x for x in lines if "cudagraph" in x.lower() or "recompil" in x.lower()][:20]}
        print(name, json.dumps(results[name])[:1500], flush=True)
    (args.out / "diagnose.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
