"""reactions.py is the wiring: the worker's projections of other services' topics come from its table."""

from __future__ import annotations

from crm_servicedesk import reactions
from crm_servicedesk.app import all_projections
from crm_servicedesk.commands import TicketDesk
from crmkit.config import topic_of
from crmkit.testing import ServiceHarness


def test_the_worker_reacts_to_other_services_exactly_as_the_table_says(desk: ServiceHarness) -> None:
    book = TicketDesk(desk.runtime)
    table = reactions.table(book)
    assert table.contact_hooks() == {
        "on_merged": book.repoint_contact,
        "on_unmerged": book.contact_unmerged,
        "on_erased": book.erase_contact,
    }
    assert [r.does for r in table.to("sales", "CustomerTierChanged")] and table.projections() == [book.tiers]
    local, tiers = reactions.worker_projections(desk.runtime)
    assert (local.name, local.topics, tiers.name, tiers.topics) == (
        "contacts",
        (topic_of("contacts"),),
        "customer_tiers",
        (topic_of("sales"),),
    )
    assert (local.on_merged.__name__, local.on_unmerged.__name__, local.on_erased.__name__) == (
        "repoint_contact",
        "contact_unmerged",
        "erase_contact",
    )
    foreign = {p.name for p in all_projections(desk.runtime) if desk.runtime.settings.topic not in p.topics}
    assert foreign == {"contacts", "customer_tiers"}
