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


@pytest.mark.usefixtures("prefect_api")
def test_benchmark_rounds_show_as_a_progress_artifact_that_ends_complete(digits):
    import numpy as np
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

    from quantmill.data import Dataset
    from quantmill.formats import baseline_for
    from quantmill.targets import HOST
    from tasks.benchmark import benchmark_task

    with np.load(digits.evaluation) as archive:
        data = Dataset(digits.evaluation, "0" * 64, {"pixels": archive["pixels"][:64]})
    fp32 = baseline_for("onnx")

    @flow
    def run():
        return benchmark_task(HOST, {fp32.name: (fp32, digits.model)}, data, 0.05)

    state = run(return_state=True)
    assert state.result().measured
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])))
    # Other tests' flows benchmark on the same server: only this flow run's artifact counts.
    mine = [a for a in found if a.flow_run_id == state.state_details.flow_run_id]
    assert [(a.description, a.data) for a in mine] == [("benchmark on cpu, onnxruntime: rounds", 100.0)]


def test_planned_rounds_grow_only_while_a_ratio_is_unsettled():
    from quantmill.progress import planned_rounds

    assert [planned_rounds(d, True, 5, 15) for d in (1, 4)] == [5, 5]
    assert planned_rounds(5, True, 5, 15) == 15 and planned_rounds(7, False, 5, 15) == 7
