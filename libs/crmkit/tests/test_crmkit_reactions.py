"""crmkit.reactions: a service's table of reactions to other services' events."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from crmkit.events import RecordedEvent
from crmkit.reactions import ANY_EVENT, Reaction, Reactions


class View:
    def __init__(self, name: str) -> None:
        self.name, self.topics = name, ("crm.sales.events",)

    def handle(self, events: Sequence[RecordedEvent]) -> None:
        pass

    def reset(self) -> None:
        pass


def erase(contact_id: str) -> None:
    pass


def merged(duplicate: str, survivor: str, merge_id: str | None) -> None:
    pass


def test_contact_events_become_hooks_and_the_rest_projections_each_once() -> None:
    tiers, triggers = View("tiers"), View("triggers")
    table = Reactions(
        "widgets",
        Reaction("contacts", ("ContactErased",), "forget them", erase),
        Reaction("contacts", ("ContactMerged",), "follow the survivor", merged),
        Reaction("sales", ("CustomerTierChanged",), "keep the tier", tiers),
        Reaction("sales", ("DealWon",), "say thanks", triggers),
        Reaction("contacts", (ANY_EVENT,), "what a trigger names", triggers),
    )
    assert table.contact_hooks() == {"on_erased": erase, "on_merged": merged}
    assert table.projections() == [tiers, triggers]
    assert [r.does for r in table.to("sales", "DealWon")] == ["say thanks"]
    assert [r.does for r in table.to("contacts", "ContactBecameStale")] == ["what a trigger names"]
    assert table.rows()[2] == ("sales", "CustomerTierChanged", "keep the tier")


def test_a_table_that_cannot_be_wired_is_refused() -> None:
    with pytest.raises(ValueError, match="its own"):
        Reactions("sales", Reaction("sales", ("DealWon",), "itself", View("x")))
    with pytest.raises(TypeError, match="must be a projection"):
        Reactions("widgets", Reaction("sales", ("DealWon",), "a bare function", erase))
    with pytest.raises(ValueError, match="two hooks"):
        Reactions(
            "widgets",
            Reaction("contacts", ("ContactErased",), "a", erase),
            Reaction("contacts", ("ContactErased",), "b", erase),
        )
