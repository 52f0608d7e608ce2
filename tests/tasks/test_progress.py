import io

import pytest

from quantmill.progress import terminal_line


def test_a_log_file_gets_the_start_one_line_per_tenth_and_the_end():
    out = io.StringIO()
    report = terminal_line("scan", out)
    for done in range(1, 301):
        report(done, 300)
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["scan: 1/300 (0%)", "scan: 30/300 (10%)"] and lines[-1] == "scan: 300/300 (100%)"
    assert len(lines) == 11


@pytest.mark.usefixtures("prefect_api")
def test_a_task_shows_its_progress_as_a_prefect_artifact():
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

    from tasks.progress import artifact_progress

    @task
    def stage() -> None:
        report = artifact_progress("layer groups scored")
        for done in range(1, 5):
            report(done, 4)

    @flow
    def run() -> None:
        stage()

    run()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])))
    # Other tests' flows may share this server: only this task's artifact counts.
    assert [a.data for a in found if a.description == "layer groups scored"] == [100.0]
