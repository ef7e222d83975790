"""reactions.py is the wiring: messaging's reactions to other services come from its table."""

from __future__ import annotations

from crm_messaging import reactions
from crm_messaging.app import projections

from .conftest import World


def test_the_worker_reacts_to_other_services_exactly_as_the_table_says(world: World) -> None:
    desk = world.desk
    assert reactions.contact_hooks(desk) == {
        "on_merged": desk.contact_merged,
        "on_unmerged": desk.contact_unmerged,
        "on_erased": desk.erase_contact,
    }
    assert desk.contacts.on_erased == desk.erase_contact
    names = [p.name for p in reactions.worker_projections(desk)]
    assert names == ["contacts", "trigger_reactor", "mail_reports"]
    table = reactions.table(desk, *reactions.worker_projections(desk)[1:])
    assert [r.handler.name for r in table.to("service-desk", "MailReportReceived")] == [
        "trigger_reactor",
        "mail_reports",
    ]  # a trigger may name any event; the reports reactor suppresses
    assert {p.name for p in projections(world.messaging.runtime)} >= set(names)
