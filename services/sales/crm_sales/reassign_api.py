"""REST edge of a deal's contact: PUT /v1/deals/{id}/contact gives the deal to another contact.

A person's reassignment is a contact change no merge caused, so an unmerge later leaves the
deal where the person put it (docs/sales.md, "Merges and unmerges").
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response
from marshmallow import RAISE, Schema, fields, validate

from crm_sales import schemas
from crm_sales.commands import SalesBook
from crmkit.web import endpoint, if_match, metadata, resource


class DealContactInput(Schema):
    """The contact the deal belongs to from now on."""

    class Meta:
        unknown = RAISE

    contact_id = fields.String(
        required=True,
        validate=validate.Regexp(r"^[A-Za-z0-9:._-]{1,128}$"),
        metadata={"description": "an existing, not erased contact (a merged id means its survivor)"},
    )


def blueprint(book: SalesBook) -> Blueprint:
    bp = Blueprint("sales_reassign", __name__)

    @bp.put("/v1/deals/<deal_id>/contact")
    @endpoint("write", body=DealContactInput, response=schemas.DealView)
    def reassign_deal(deal_id: str, body: dict[str, Any]) -> Response:
        """Give the deal to another contact (DealContactChanged, reason `reassigned`); the same
        contact again records nothing."""
        return resource(book.reassign_deal(deal_id, body["contact_id"], metadata(), if_match()).view())

    return bp
