"""Layerwise sensitivity: quantize one group of nodes at a time, measure the metric, rank.
The most sensitive groups are the ones to keep in float when a full quantization misses."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from quantmill.data import Dataset
from quantmill.evaluation import evaluate, predict
from quantmill.quantizers.onnx_runtime import QuantizeOptions, quantize

# A numbered block ("layer.3", "layers.3", "h.3", "block.3") is one group in a transformer;
# elsewhere each weighted node's scope is its own group.
_BLOCK = re.compile(r"^(.*?(?:layer|layers|h|block|blocks)\.\d+)(?:/|$)")


@dataclass(frozen=True)
class GroupScore:
    """One group: its nodes, and the metric drop (points) with only this group quantized."""

    group: str
    nodes: tuple[str, ...]
    accuracy_drop: float


def node_groups(nodes: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Return quantizable node names grouped by transformer block or, outside blocks, by scope."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in nodes:
        match = _BLOCK.match(name)
        key = match.group(1) if match else (name.rsplit("/", 1)[0] or name)
        groups[key].append(name)
    return {key: tuple(members) for key, members in groups.items()}


def rank(scores: list[GroupScore]) -> tuple[GroupScore, ...]:
    """Return scores ordered from the most to the least sensitive group."""
    return tuple(sorted(scores, key=lambda s: -s.accuracy_drop))


def exclusion_sets(ranking: tuple[GroupScore, ...]) -> tuple[tuple[GroupScore, ...], ...]:
    """Return the groups to keep in float, growing: the top 1, 2, 4, ... groups, up to half
    of all groups (beyond that the model is no longer meaningfully quantized)."""
    sets, count = [], 1
    while count <= max(1, len(ranking) // 2):
        sets.append(ranking[:count])
        count *= 2
    return tuple(sets)


def scan(
    model: Path, options: QuantizeOptions, groups: dict[str, tuple[str, ...]], calibration: Dataset,
    evaluation: Dataset, baseline_outputs: np.ndarray, task: str, scratch: Path,
) -> tuple[GroupScore, ...]:
    """Quantize each group alone with options, evaluate it against the FP32 outputs, and
    return the groups ranked from most to least sensitive."""
    scores = []
    for index, (group, nodes) in enumerate(groups.items()):
        partial = quantize(
            model, scratch / f"scan-{index}.onnx", replace(options, nodes_to_quantize=nodes, nodes_to_exclude=()),
            calibration, scratch,
        )
        result = evaluate(task, baseline_outputs, predict(partial, evaluation), evaluation)
        scores.append(GroupScore(group, nodes, result.accuracy_drop))
        partial.unlink()
    return rank(scores)
