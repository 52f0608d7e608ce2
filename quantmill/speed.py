"""Is a quantized model faster than full precision beyond the noise? Both are measured in
the same interleaved rounds, so round i of one pairs with round i of the other (a slow
spell of a shared machine lands on both); the ratio's confidence interval comes from the
paired log-ratios (scipy's one-sample t interval). "Faster" means the interval's lower
bound clears 1 + MARGIN; "slower" means its upper bound is below 1; anything else is no
measurable difference."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from quantmill.errors import QuantmillError

CONFIDENCE = 0.95
# 2 %: below what a user would deploy a quantized model for, above the interval's own
# rounding; a ratio whose interval reaches below 1.02x is not called faster.
MARGIN = 0.02
FASTER, SLOWER, NO_DIFFERENCE = "faster", "slower", "no measurable difference"
# What the user wants from quantizing: more throughput at the serving batch, lower latency at
# batch 1, or a smaller model that is not slower. Each runtime's benchmark names the
# per-round figure for the first two (Benchmark.speed_rounds); size is judged on size, with
# the throughput figure only required not to be slower.
THROUGHPUT, LATENCY, SIZE = "throughput", "latency", "size"
OBJECTIVES = (THROUGHPUT, LATENCY, SIZE)


@dataclass(frozen=True)
class SpeedRatio:
    """candidate / baseline: the geometric mean of the paired per-round ratios, its
    confidence interval (low, high), the number of paired rounds, and the verdict."""

    ratio: float
    low: float
    high: float
    rounds: int
    verdict: str

    def describe(self) -> str:
        """Return e.g. '1.21x (95% CI 1.15-1.27x over 5 paired rounds)'."""
        return f"{self.ratio:.2f}x ({CONFIDENCE:.0%} CI {self.low:.2f}-{self.high:.2f}x over {self.rounds} paired rounds)"


def compare(candidate: list[float], baseline: list[float], margin: float = MARGIN) -> SpeedRatio:
    """Return the SpeedRatio of candidate's per-round figures over baseline's (higher is
    faster), paired round by round. Fewer than two pairs give an unbounded interval, so
    never a verdict of faster or slower. Raises ValueError for a non-positive figure."""
    pairs = min(len(candidate), len(baseline))
    if pairs == 0:
        return SpeedRatio(math.nan, 0.0, math.inf, 0, NO_DIFFERENCE)
    a, b = np.asarray(candidate[:pairs], float), np.asarray(baseline[:pairs], float)
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("throughput figures must be positive")
    logs = np.log(a / b)
    mean = float(logs.mean())
    if pairs < 2:
        low, high = 0.0, math.inf
    elif np.ptp(logs) == 0:
        low = high = math.exp(mean)
    else:
        interval = stats.ttest_1samp(logs, 0.0).confidence_interval(CONFIDENCE)
        low, high = math.exp(interval.low), math.exp(interval.high)
    verdict = FASTER if low >= 1.0 + margin else SLOWER if high < 1.0 else NO_DIFFERENCE
    return SpeedRatio(math.exp(mean), low, high, pairs, verdict)



def check_objective(objective: str, benchmark_seconds: float = 1.0) -> str:
    """Return objective. Raises QuantmillError naming the known objectives for any other, or
    when benchmark_seconds (timed seconds per batch size and round) is not a finite number
    above 0."""
    if objective not in OBJECTIVES:
        raise QuantmillError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    if not (isinstance(benchmark_seconds, (int, float)) and math.isfinite(benchmark_seconds) and benchmark_seconds > 0):
        raise QuantmillError(f"benchmark_seconds must be a finite number of seconds above 0, not {benchmark_seconds}")
    return objective


def settled(rounds: dict[str, list[float]], pair: tuple[str, str] | None) -> bool:
    """Return whether the verdict of pair's model against its baseline (two labels of
    rounds, each label's per-round figures) is faster or slower, so that more rounds would
    not change it; True without a pair to judge."""
    if pair is None or not all(label in rounds for label in pair):
        return True
    return compare(rounds[pair[0]], rounds[pair[1]]).verdict != NO_DIFFERENCE
