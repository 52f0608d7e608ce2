"""Layerwise sensitivity: quantize one group of nodes at a time, measure the metric, rank.
The most sensitive groups are the ones to keep in float when a full quantization misses."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quantmill.progress import Progress

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
    groups: dict[str, tuple[str, ...]], partial: Callable[[tuple[str, ...]], Path], score: Callable[[Path], float],
    progress: Progress | None = None,
) -> tuple[GroupScore, ...]:
    """Quantize each group alone (partial(nodes) writes that model), score it (the metric
    drop against full precision), and return the groups ranked from most to least
    sensitive, telling progress after each group."""
    scores = []
    for group, nodes in groups.items():
        model = partial(nodes)
        scores.append(GroupScore(group, nodes, score(model)))
        model.unlink()
        if progress is not None:
            progress(len(scores), len(groups))
    return rank(scores)
