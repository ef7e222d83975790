"""What sales does when another service records an event (crmkit.reactions).

`SalesBook` builds its local copy of contacts (`book.local`, which the worker runs) with
the table's hooks; nothing else in the service reacts to another service's events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crmkit.reactions import Reaction, Reactions

if TYPE_CHECKING:
    from crm_sales.commands import SalesBook


def table(book: SalesBook) -> Reactions:
    return Reactions(
        "sales",
        Reaction(
            "contacts",
            ("ContactMerged",),
            "the duplicate's deals and activities move to the survivor, naming the merge",
            book.contact_merged,
        ),
        Reaction(
            "contacts",
            ("ContactUnmerged",),
            "what that merge moved, and nobody moved since, goes back",
            book.contact_unmerged,
        ),
        Reaction(
            "contacts",
            ("ContactErased",),
            "the person's deals, activities and quotes drop their texts, their keys are destroyed",
            book.erase_contact,
        ),
    )
