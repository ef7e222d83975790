"""End to end: the real worker process detects SLA breaches and records each exactly once,
even when it is killed with SIGKILL mid-sweep and started again.

Time is moved, not waited for: the worker runs with CRM_CLOCK_OFFSET_SECONDS three
hours ahead (crmkit.clock), so tickets opened a moment ago are overdue.
"""

import signal
from collections import Counter

import pytest

from crmkit import stack
from crmkit.projector import read_topics
from crmkit.testing import ServiceHarness, start_service_process, stored_events, wait_until

POLICY = {
    "name": "Urgent",
    "targets": {"urgent": {"first_response": 15, "resolution": 120}},
    "escalation": {"action": "reassign", "group": "escalations"},
}
TICKETS = 40


def breaches(desk: ServiceHarness) -> list[dict]:
    return stored_events(desk.runtime.db["events"], type="SlaBreached")


@pytest.mark.e2e
def test_breaches_are_recorded_and_published_exactly_once_across_a_worker_kill(desk: ServiceHarness, directory) -> None:
    headers = desk.headers("servicedesk:write")
    cid = directory.add("c-1")
    assert desk.client.post("/v1/sla-policies", json=POLICY, headers=headers).status_code == 201
    for n in range(TICKETS):
        response = desk.client.post(
            "/v1/tickets",
            headers=headers,
            json={
                "subject": f"outage {n}",
                "contact_id": cid,
                "channel": "phone",
                "type": "incident",
                "priority": "urgent",
            },
        )
        assert response.status_code == 201
    desk.project()
    desk.runtime.flush()
    worker_env = {
        "CRM_CLOCK_OFFSET_SECONDS": str(3 * 3600),
        "CRM_SERVICEDESK_SWEEP_SECONDS": "0.05",
        "CRM_SERVICEDESK_METRICS_PORT": str(stack.free_port()),
    }

    worker = start_service_process("service-desk", "worker", worker_env)
    try:
        wait_until(lambda: breaches(desk), timeout=60, what="the first breach")
        worker.send_signal(signal.SIGKILL)  # mid-sweep: some tickets breached, most not yet
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    killed_at = len(breaches(desk))

    worker = start_service_process("service-desk", "worker", worker_env)
    try:
        wait_until(lambda: len(breaches(desk)) >= 2 * TICKETS, timeout=90, what="every ticket breached")

        def sweeps() -> int:  # no record yet while the sweep that breached everything is finishing
            return (desk.runtime.db["sla_sweeps"].find_one({"_id": "worker"}) or {}).get("sweeps", 0)

        done = sweeps()
        wait_until(lambda: sweeps() >= done + 3, timeout=60, what="more sweeps after every breach")
    finally:
        worker.send_signal(signal.SIGKILL)  # a graceful stop is not what is under test; it only costs time
        worker.wait(timeout=30)

    stored = Counter((doc["stream_id"], doc["data"]["key"]) for doc in breaches(desk))
    assert len(stored) == 2 * TICKETS and set(stored.values()) == {1}, (killed_at, stored.most_common(3))
    escalations = len(stored_events(desk.runtime.db["events"], type="TicketEscalated"))
    assert escalations == 2 * TICKETS  # one per breach of an open target

    desk.runtime.publisher.sweep(min_age=0)  # what the next worker's outbox sweeper does for a killed one
    published: dict[tuple[str, str], set[str]] = {}

    def all_published() -> bool:
        published.clear()
        for batch in read_topics(desk.runtime.settings.kafka_bootstrap, [desk.runtime.settings.topic]):
            for event in batch:
                if event.type == "SlaBreached":
                    published.setdefault((event.stream_id, event.data["key"]), set()).add(event.id)
        return len(published) == 2 * TICKETS

    wait_until(all_published, timeout=60, what="every breach on Kafka")
    assert all(len(ids) == 1 for ids in published.values())  # one event per target (resends share the id)
