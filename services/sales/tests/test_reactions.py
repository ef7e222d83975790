"""reactions.py is the wiring: the sales book's local copy of contacts runs the table's hooks."""

from __future__ import annotations

from crm_sales import reactions
from crm_sales.commands import SalesBook
from crmkit.testing import ServiceHarness


def test_the_local_contacts_copy_reacts_exactly_as_the_table_says(sales: ServiceHarness) -> None:
    book = SalesBook(sales.runtime)
    hooks = reactions.table(book).contact_hooks()
    assert hooks == {
        "on_merged": book.contact_merged,
        "on_unmerged": book.contact_unmerged,
        "on_erased": book.erase_contact,
    }
    assert (book.local.on_merged, book.local.on_unmerged, book.local.on_erased) == (
        hooks["on_merged"],
        hooks["on_unmerged"],
        hooks["on_erased"],
    )
    assert reactions.table(book).projections() == []
    book.directory.close()
