"""Prefect automations the deployed stack needs: flow runs whose process died (a worker
killed, a machine lost) are marked Crashed instead of staying Running forever."""

from __future__ import annotations

from datetime import timedelta

CRASH_AUTOMATION = "quantmill: crash unresponsive flow runs"
# Flow runs send a heartbeat every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (30, Prefect's
# minimum, in the workers' environment); three missed beats mean the process is gone.
UNRESPONSIVE_AFTER = timedelta(seconds=90)


def ensure_crash_automation() -> str:
    """Create, unless one of that name exists, the automation (Prefect's documented
    zombie-flow recipe) that marks a flow run Crashed when its heartbeats stop without a
    final state; return its id. Prefect's client errors pass through."""
    from prefect.automations import Automation, ChangeFlowRunState, EventTrigger, Posture, ResourceSpecification
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(CRASH_AUTOMATION)
    if existing:
        return str(existing[0].id)
    automation = Automation(
        name=CRASH_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=UNRESPONSIVE_AFTER,
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {UNRESPONSIVE_AFTER.seconds} s: its process is gone")],
    ).create()
    return str(automation.id)

