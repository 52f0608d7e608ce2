"""Progress of long stages (the sensitivity scan, training the demo's language model) as
(done, total): the core calls a Progress, and its caller decides where it shows (tasks/ add
a Prefect progress artifact)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

Progress = Callable[[int, int], None]


def terminal_line(label: str, stream: TextIO | None = None) -> Progress:
    """Return a Progress that keeps one line "label: done/total (percent)" up to date on
    stream (stderr by default), rewritten in place on a terminal and printed at each tenth
    elsewhere (a log file gets a few lines, not thousands), ending the line when done."""
    out = stream or sys.stderr
    live = out.isatty()
    shown = [-1]

    def report(done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if not live and tenth == shown[0] and done < total:
            return
        shown[0] = tenth
        text = f"{label}: {done}/{total} ({100.0 * done / max(total, 1):.0f}%)"
        out.write(("\r" + text) if live else (text + "\n"))
        if live and done >= total:
            out.write("\n")
        out.flush()

    return report


def planned_rounds(done: int, more: bool, rounds: int, max_rounds: int) -> int:
    """Return how many benchmark rounds are planned after done of them: rounds at first,
    max_rounds once extra rounds settle a ratio still within the noise, done when no more
    follow (so the last report is complete)."""
    if not more:
        return done
    return rounds if done < rounds else max_rounds
