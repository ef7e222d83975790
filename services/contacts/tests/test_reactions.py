"""reactions.py is the wiring: the contacts worker's reactions to sales are its table's projections."""

from __future__ import annotations

from crm_contacts import reactions
from crm_contacts.app import SERVICE
from crmkit.config import topic_of
from crmkit.testing import ServiceHarness


def test_the_worker_reacts_to_sales_exactly_as_the_table_says(contacts: ServiceHarness) -> None:
    table = reactions.table(contacts.runtime)
    assert [(r.source, r.events) for r in table.table] == [
        ("sales", ("DealCreated",)),
        ("sales", ("DealWon",)),
        ("sales", ("CustomerTierChanged",)),
    ]
    assert [(p.name, list(p.topics)) for p in table.projections()] == [
        ("lifecycle", [topic_of("sales")]),
        ("derived", [topic_of("sales")]),
    ]
    assert table.contact_hooks() == {}
    worker = {p.name for p in SERVICE.projections(contacts.runtime)}
    assert {"lifecycle", "derived"} <= worker
