"""Errors quantmill raises for problems the user can fix."""

from __future__ import annotations

from pathlib import Path


class QuantmillError(Exception):
    """A problem with what quantmill was given; its message is one line, fit to show a user."""


class InputError(QuantmillError):
    """A model or data file that cannot be used, naming the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class FormatUnavailable(QuantmillError):
    """A format that cannot be produced on this machine, with the reason."""
