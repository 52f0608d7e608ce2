"""A goal a search reaches for besides the accuracy budget: an artifact of at most so many
MB or bits per weight, or at most so many milliseconds at batch 1. Among the attempts within
budget that reach it, the one with the lowest drop ships."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median

from quantmill.attempts import Attempt
from quantmill.errors import QuantmillError
from quantmill.speed import LATENCY

SIZE_MB, BITS_PER_WEIGHT, LATENCY_MS = "max_size_mb", "max_bits_per_weight", "max_latency_ms"
UNITS = {SIZE_MB: "MB", BITS_PER_WEIGHT: "bits per weight", LATENCY_MS: "ms at batch 1"}


@dataclass(frozen=True)
class Goal:
    """At most value on kind's scale (SIZE_MB, BITS_PER_WEIGHT or LATENCY_MS); lower is better."""

    kind: str
    value: float

    def describe(self) -> str:
        """Return e.g. 'at most 4 MB'."""
        return f"at most {self.value:g} {UNITS[self.kind]}"

    def figure(self, attempt: Attempt, parameters: int) -> float | None:
        """Return the attempt's value on this goal's scale: its artifact's MB, its bits per
        weight over the model's parameters, or the median milliseconds of one sample (a
        decoded token, for language models) at batch 1 over its benchmark rounds; None when
        latency was not measured."""
        if self.kind == SIZE_MB:
            return attempt.artifact.size_bytes / 1e6
        if self.kind == BITS_PER_WEIGHT:
            return attempt.artifact.size_bytes * 8 / parameters
        if attempt.benchmark is None:
            return None
        rounds, _ = attempt.benchmark.speed_rounds(LATENCY)
        return 1000 / median(rounds) if rounds else None

    def met(self, figure: float | None) -> bool:
        """Return whether figure reaches the goal (an unmeasured figure does not)."""
        return figure is not None and figure <= self.value

    def format(self, figure: float | None) -> str:
        """Return figure with its unit, e.g. '3.60 MB'."""
        return "not measured" if figure is None else f"{figure:.2f} {UNITS[self.kind]}"


def goal_for(max_size_mb: float | None = None, max_bits_per_weight: float | None = None,
             max_latency_ms: float | None = None, search_seconds: float = 0.0) -> Goal | None:
    """Return the goal the one given bound sets, or None when none is given. Raises
    QuantmillError when more than one is given, one that is not a positive number, a
    search_seconds that is not a finite number of 0 or more, or a goal without a search (search_seconds: how long the search goes on trying attempts)."""
    if not (isinstance(search_seconds, (int, float)) and math.isfinite(search_seconds) and search_seconds >= 0):
        raise QuantmillError(f"search_seconds must be a finite number of seconds, 0 or more, not {search_seconds}")
    given = {kind: value for kind, value in ((SIZE_MB, max_size_mb), (BITS_PER_WEIGHT, max_bits_per_weight),
                                             (LATENCY_MS, max_latency_ms)) if value is not None}
    if len(given) > 1:
        raise QuantmillError(f"give one goal, not {len(given)}: {', '.join(given)}")
    if not given:
        return None
    kind, value = next(iter(given.items()))
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise QuantmillError(f"{kind} must be a positive number, not {value}")
    if not search_seconds > 0:
        raise QuantmillError(f"{kind} is a goal for a search: give search_seconds (--search-seconds) too, the time "
                             "it may go on trying attempts")
    return Goal(kind, float(value))
