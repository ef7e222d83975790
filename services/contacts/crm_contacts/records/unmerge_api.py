"""REST edge of unmerge: POST /v1/contacts/{id}/unmerge reverses a merge (docs/contacts.md, "Unmerge").

A module of its own beside `api` (the other contact routes), registered in `app`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response
from marshmallow import RAISE, Schema

from crm_contacts.records import schemas
from crm_contacts.records.commands import ContactBook
from crmkit.web import endpoint, if_match, metadata, resource


class UnmergeInput(Schema):
    """Which merged record to split off this contact again."""

    class Meta:
        unknown = RAISE

    duplicate_id = schemas.Text(
        64,
        required=True,
        allow_none=False,
        metadata={"description": "the contact that was merged into this one (its `merged_from` lists it)"},
    )


def blueprint(book: ContactBook) -> Blueprint:
    bp = Blueprint("contacts_unmerge", __name__)

    @bp.post("/v1/contacts/<contact_id>/unmerge")
    @endpoint("write", body=UnmergeInput, response=schemas.ContactView)
    def unmerge(contact_id: str, body: dict[str, Any]) -> Response:
        """Reverse a merge: the duplicate is active again as it was at the merge, this contact gives
        back what it only absorbed and has not changed since, and sales, the service desk and
        messaging move back the records the merge moved. Safe to repeat; 409 if the duplicate was
        erased since. Answers with this contact (the survivor); If-Match applies to it."""
        return resource(book.unmerge(contact_id, body["duplicate_id"], metadata(), if_match()).view())

    return bp
