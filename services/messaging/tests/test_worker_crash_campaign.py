"""The real messaging worker killed (-9) in the middle of a pass of a campaign and started
again: every member is still accounted for exactly once, and every sent message reached
the SMTP sink once, except at most the one in flight at the kill (handed over, its outcome
not yet recorded), which may arrive a second time with the same Message-ID. Deliveries are
counted per message id at the sink (`deliveries.log`), not by its files, which dedupe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crm_messaging.dispatcher import LEASE
from crmkit import stack
from crmkit.testing import stored_events, wait_until

from .conftest import Worker, World, bulk_audience, every_member_accounted_for_once, launch_campaign

SIZE = 1500
THROTTLE = 6000  # per minute: the campaign takes about 15 s, so the kill lands mid-way
KILL_AT = 350  # mails at the sink: the worker is killed while it hands a pass's mails over


@pytest.fixture
def clock_file(tmp_path: Path) -> Path:
    path = tmp_path / "clock"
    path.write_text("0")
    return path


@pytest.fixture
def worker(world: World, clock_file: Path, service_env: dict[str, str]) -> Iterator[Worker]:
    subject = Worker(
        {
            "CRM_CLOCK_FILE": str(clock_file),
            "CRM_MESSAGING_METRICS_PORT": str(stack.free_port()),
            "CRM_LOG_LEVEL": "WARNING",
            "CRM_MESSAGING_TRIGGER_TOPICS": f"t.none.{service_env['CRM_TEST_SUFFIX']}",
        }
    )
    try:
        yield subject
    finally:
        subject.stop()


@pytest.mark.timeout(600)
def test_killing_the_worker_mid_campaign_loses_and_doubles_nothing(
    world: World, worker: Worker, clock_file: Path
) -> None:
    audience = bulk_audience(world, SIZE, "crash")
    campaign_id = launch_campaign(world, "crash", throttle_per_minute=THROTTLE)
    events = world.messaging.runtime.db["events"]

    def sent() -> int:
        return len(stored_events(events, type="MessageSent"))

    worker.start()
    wait_until(lambda: sum(world.deliveries().values()) >= KILL_AT, timeout=300, what="the campaign to be under way")
    worker.kill()
    at_kill = sent()
    assert at_kill < SIZE - len(audience.without_consent)  # the kill came mid-campaign

    clock_file.write_text(str(int(LEASE.total_seconds()) + 60))  # the dead worker's leases run out
    worker.start()
    wait_until(
        lambda: stored_events(events, {"stream_id": campaign_id}, type="CampaignCompleted"),
        timeout=400,
        what="the campaign to complete after the restart",
    )
    worker.stop()

    sent_ids = every_member_accounted_for_once(world, campaign_id, audience)
    assert len(sent_ids) > at_kill
    deliveries = world.deliveries()
    assert set(deliveries) == sent_ids  # every sent message reached the sink, and nothing else did
    duplicates = sum(count - 1 for count in deliveries.values())
    print(
        f"kill -9 after {at_kill} recorded sends: {len(sent_ids)} sent, {sum(deliveries.values())} deliveries, "
        f"{duplicates} duplicate(s)"
    )
    assert duplicates <= 1  # only the message in flight at the kill may have gone out twice
