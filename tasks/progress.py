"""A Progress (quantmill.progress) shown where Prefect users look: a progress artifact of the
running task, created at the first report and updated after, and one terminal line."""

from __future__ import annotations

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from quantmill.progress import Progress, terminal_line


def artifact_progress(label: str) -> Progress:
    """Return a Progress that updates a Prefect progress artifact described by label and a
    terminal line."""
    line = terminal_line(label)
    artifact: list = []

    def report(done: int, total: int) -> None:
        percent = 100.0 * done / max(total, 1)
        if not artifact:
            artifact.append(create_progress_artifact(percent, description=label))
        else:
            update_progress_artifact(artifact[0], percent)
        line(done, total)

    return report
