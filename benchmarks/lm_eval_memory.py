"""Peak memory of quantmill's LM evaluation against vocabulary size and window count.

For each (vocabulary, windows), in a fresh process: a random-weight 2-layer Llama of that
vocabulary (hidden 64, so that the weights are small beside the log-probabilities), its
reference log-probabilities and a perturbed copy's through the transformers runtime's
worker, written to disk a window at a time, then compare_logits over both. Prints the
weights' bytes, the peak RSS of the evaluating process and of the worker, and what the
log-probabilities of one model would take in memory (float32), which the old in-memory
path held several times over (in float64).

    .venv/bin/python benchmarks/lm_eval_memory.py [--vocab 32000 151936] [--windows 8 32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from quantmill.hardware import local_cpu
from quantmill.models.hf_causal_lm import WINDOW

GIB = 2 ** 30


def _model(directory: Path, vocab: int, seed: int) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=WINDOW + 8)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def one(vocab: int, windows: int) -> dict:
    """Return the figures of one (vocab, windows) run in this process."""
    from quantmill.isolation import in_worker, stop_workers
    from quantmill.measure import peak_rss_bytes
    from quantmill.metrics import compare_logits
    from quantmill.runtimes import get_runtime

    transformers = get_runtime("transformers")
    tokens = np.random.default_rng(0).integers(0, vocab, (windows, WINDOW + 1))
    with tempfile.TemporaryDirectory(prefix="quantmill-lm-memory-") as scratch:
        weights = _model(Path(scratch) / "reference", vocab, 0)
        _model(Path(scratch) / "candidate", vocab, 1)
        reference = transformers.log_probs(Path(scratch) / "reference", tokens)
        candidate = transformers.log_probs(Path(scratch) / "candidate", tokens)
        result = compare_logits(reference, candidate, tokens)
        worker_peak = in_worker("transformers", "peak RSS", peak_rss_bytes)
        stop_workers()
    return {"vocab": vocab, "windows": windows, "weights_bytes": weights, "evaluating_peak_bytes": peak_rss_bytes(),
            "worker_peak_bytes": worker_peak, "log_probs_bytes": windows * WINDOW * vocab * 4,
            "mean_kl": result.secondary["mean_kl"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 151936])
    parser.add_argument("--windows", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--one", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return
    print(f"hardware: {local_cpu('transformers').describe()}; window {WINDOW} positions")
    print(f"{'vocab':>7} {'windows':>7} {'weights GiB':>11} {'log-probs GiB':>13} {'evaluating peak GiB':>19} "
          f"{'worker peak GiB':>15} {'worker beyond weights':>21}")
    for vocab in args.vocab:
        for windows in args.windows:
            done = subprocess.run([sys.executable, __file__, "--one", str(vocab), str(windows)], capture_output=True,
                                  text=True, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{vocab:>7} {windows:>7} {r['weights_bytes'] / GIB:>11.3f} {r['log_probs_bytes'] / GIB:>13.2f} "
                  f"{r['evaluating_peak_bytes'] / GIB:>19.2f} {r['worker_peak_bytes'] / GIB:>15.2f} "
                  f"{(r['worker_peak_bytes'] - r['weights_bytes']) / GIB:>21.2f}")


if __name__ == "__main__":
    main()
