"""The driver: which attempt to make next, when to climb a ladder, when to scan sensitivity,
when to search and when to stop; then what the benchmarks mean for the attempts made.

It runs nothing itself. `Driver.next_request()` returns the next thing to run (an attempt to
make, or a sensitivity scan) and the caller hands back what came of it (`made`, `failed`,
`scanned`), so the same driver runs under Prefect (flows/quantize_model.py), in a test or in a
notebook. Like Olive's engine, it plans and the passes (formats) only run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from pathlib import Path

from quantmill.attempts import Attempt
from quantmill.benchmark import TargetBenchmarks
from quantmill.formats import Candidate, Format, Step, get_format
from quantmill.gate import SearchChoice, best_for_objective, chosen_attempt
from quantmill.goal import Goal
from quantmill.hardware import Hardware
from quantmill.isolation import failure_details
from quantmill.metrics import Budget


@dataclass(frozen=True)
class MakeAttempt:
    """Make attempt number index: quantize, evaluate and export step, in format (the Format
    step names)."""

    index: int
    step: Step
    format: Format

    def describe(self) -> str:
        """Return the format and its options in words, e.g. 'gguf-q4_k_m Q4_K_M with imatrix'."""
        return f"{self.step.format} {self.step.options.describe()}".strip()


@dataclass(frozen=True)
class ScanSensitivity:
    """Rank the layer groups of format quantized with options (a format that scans sensitivity)."""

    format: Format
    options: object


Request = MakeAttempt | ScanSensitivity


class Driver:
    """Plans the attempts for candidates within budget on hardware: each candidate up its
    ladder to its first rung within budget; after a format that scans sensitivity misses, a
    scan and its exclusion steps; the first attempt within budget ends the plan, unless
    search_seconds > 0, when candidates go on being tried until that many seconds have
    passed and then each format's search moves around every attempt within budget.
    log hears one line per decision."""

    def __init__(self, candidates: tuple[Candidate, ...], budget: Budget, hardware: Hardware,
                 search_seconds: float = 0.0, log: Callable[[str], None] = lambda line: None,
                 clock: Callable[[], float] = time.monotonic):
        self.candidates = candidates
        self.budget = budget
        self.hardware = hardware
        self.search_seconds = search_seconds
        self.log = log
        self.clock = clock
        self.attempts: list[Attempt] = []
        self.failures: list[dict] = []
        self.scores: tuple = ()
        self._tried: set = set()
        self._outcome: object = None
        self._primed = False
        self._plan = self._planned()

    def next_request(self) -> Request | None:
        """Return the next thing to run, or None when the plan is done. Call made() or
        failed() after a MakeAttempt, scanned() after a ScanSensitivity, before asking again."""
        try:
            request = self._plan.send(self._outcome) if self._primed else next(self._plan)
        except StopIteration:
            return None
        self._primed = True
        self._outcome = None
        return request

    def made(self, attempt: Attempt) -> None:
        """Take back the attempt a MakeAttempt made."""
        self.attempts.append(attempt)
        self._outcome = attempt

    def failed(self, request: MakeAttempt, error: Exception) -> None:
        """Take back a MakeAttempt that failed with error: recorded with the signal and the
        stderr tail of a crashed worker (isolation.failure_details), and the ladder goes on."""
        reason = f"{type(error).__name__}: {error}"
        self.log(f"attempt {request.index} ({request.describe()}) failed: {reason}")
        self.failures.append({"index": request.index, "format": request.step.format, "description": request.describe(),
                              "reason": reason, **failure_details(error)})
        self._outcome = False

    def scanned(self, scores: tuple) -> None:
        """Take back the layer groups a ScanSensitivity ranked."""
        self.scores = scores
        self._outcome = scores

    def _planned(self) -> Generator[Request, object, None]:
        deadline = self.clock() + self.search_seconds
        for candidate in self.candidates:
            if self.attempts and self.search_seconds and self.clock() > deadline:
                self.log(f"search: {self.search_seconds:g} s of attempts passed; {candidate.format} and the rest not tried")
                break
            fmt = get_format(candidate.format)
            if (yield from self._until_within(fmt.ladder(candidate.reason, self.hardware))):
                if self.search_seconds:
                    continue
                return
            tried_here = [a for a in self.attempts if a.format == fmt.name]
            if fmt.scans_sensitivity and tried_here:
                best = min(tried_here, key=lambda a: a.evaluation.accuracy_drop).options
                scores = yield ScanSensitivity(fmt, best)
                if (yield from self._until_within(fmt.exclusion_steps(best, scores))) and not self.search_seconds:
                    return
        if not self.search_seconds:
            return
        # Around each attempt within budget, the mixes of precision its format offers, while
        # the search's time lasts: the attempts they add may be smaller or better.
        for made in [a for a in self.attempts if self.budget.meets(a.evaluation)]:
            for step in get_format(made.format).search_moves(made.options):
                if self.clock() > deadline:
                    self.log(f"search: {self.search_seconds:g} s of attempts passed; {step.reason} not tried")
                    break
                yield from self._attempt(step)

    def _until_within(self, steps) -> Generator[Request, object, bool]:
        for step in steps:
            made = yield from self._attempt(step)
            if isinstance(made, Attempt) and self.budget.meets(made.evaluation):
                return True
        return False

    def _attempt(self, step: Step) -> Generator[Request, object, Attempt | None]:
        if (step.format, step.options) in self._tried:
            return None
        self._tried.add((step.format, step.options))
        request = MakeAttempt(len(self.attempts) + len(self.failures) + 1, step, get_format(step.format))
        self.log(f"attempt {request.index}: {request.describe()} ({step.reason})")
        outcome = yield request
        return outcome if isinstance(outcome, Attempt) else None

    def baselines(self, primary: str) -> list[Format]:
        """Return the full-precision formats to benchmark beside the attempts: primary (the
        report's headline) and each attempt's own, once each."""
        return [get_format(name) for name in dict.fromkeys([primary, *(a.baseline_format for a in self.attempts)])]

    def artifacts(self) -> dict[str, tuple[Format, Path]]:
        """Return each attempt's (format, artifact path) by its label (its index)."""
        return {str(a.index): (get_format(a.format), a.artifact.path) for a in self.attempts}

    def judged(self) -> tuple[str, str] | None:
        """Return the labels (attempt, its baseline) whose speed the benchmark must settle:
        the attempt that would ship; None for a search, whose pick is measured again."""
        shipping = chosen_attempt(self.attempts, self.budget)
        return None if shipping is None or self.search_seconds else (str(shipping.index), shipping.baseline_format)

    def benchmarked(self, measured: TargetBenchmarks) -> None:
        """Attach what the run's own target measured to the attempts. An attempt whose
        benchmark crashed, or whose baseline's did, becomes a failed attempt."""
        lost = [a for a in self.attempts if {str(a.index), a.baseline_format} & set(measured.failed)]
        for a in lost:
            failure = measured.failed.get(str(a.index), measured.failed.get(a.baseline_format, {}))
            self.failures.append({"index": a.index, "format": a.format,
                                  "description": f"{a.format} {a.options.describe()}".strip(), **failure})
        self.attempts = [a for a in self.attempts if a not in lost]
        if measured.measured:
            self.attempts = [replace(a, benchmark=measured.benchmarks[str(a.index)],
                                     baseline=measured.benchmarks[a.baseline_format]) for a in self.attempts]

    def pick(self, objective: str, goal: Goal | None, parameters: int) -> SearchChoice | None:
        """Return what a search picks among the benchmarked attempts (gate.best_for_objective);
        None when not searching or none is within budget."""
        if not self.search_seconds:
            return None
        choice = best_for_objective(self.attempts, self.budget, objective, goal, parameters)
        if choice is not None:
            self.log(f"search chose attempt {choice.index}: {choice.why}")
        return choice

    def confirming(self, choice: SearchChoice) -> tuple[str, str]:
        """Return the labels (attempt, its baseline) a search's pick is measured again by."""
        pick = next(a for a in self.attempts if a.index == choice.index)
        return str(pick.index), pick.baseline_format

    def confirmed(self, choice: SearchChoice, again: TargetBenchmarks) -> None:
        """Replace the search pick's figures with its fresh measurement against its baseline,
        which the gate judges (when that measurement succeeded)."""
        if not again.measured or again.failed:
            return
        self.attempts = [replace(a, benchmark=again.benchmarks[str(a.index)], baseline=again.benchmarks[a.baseline_format])
                         if a.index == choice.index else a for a in self.attempts]
