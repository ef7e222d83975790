"""Every event the sales service emits: meaning, JSON Schema of `data`, an example.

`make catalogue` turns this into docs/events/; with CRM_STRICT_EVENTS=1 (tests) the
event store refuses anything not described here (docs/events-versioning.md). A contact
is referred to by its id; what sales writes about the person (deal titles, activity
subjects, notes and outcomes, quote notes and line texts, reasons) is personal and
sealed (`domain.PERSONAL_DATA`). Money is a decimal string with exactly the currency's
minor-unit decimals, plus the currency.
"""

from __future__ import annotations

from typing import Any

from crm_sales import money
from crm_sales.domain import ACTIVITY_TYPES, LOST, PERSONAL_DATA, REASON_CODE, TIERS, WON
from crmkit.catalogue import Catalogue, EventType

ID = {"type": "string", "minLength": 1}
OPTIONAL_ID = {"type": ["string", "null"], "minLength": 1}
TEXT = {"type": "string", "minLength": 1}
OPTIONAL_TEXT = {"type": ["string", "null"]}
TIME = {"type": "string", "format": "date-time"}
DATE = {"type": ["string", "null"], "format": "date"}
CURRENCY = {"enum": sorted(money.MINOR_UNITS)}
DECIMAL = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "description": "a non-negative decimal as text"}
AMOUNT = {**DECIMAL, "description": "money as a decimal string, in `currency`"}
PERCENT = {**DECIMAL, "description": "a percentage 0..100 as a decimal string"}
STAGE = {"type": "string", "minLength": 1, "description": "a stage key of the deal's pipeline"}
OPEN_STAGE = {"type": "string", "minLength": 1, "description": "an open stage key of the deal's pipeline"}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


def _changes(fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": fields, "minProperties": 1}


PRODUCT_FIELDS: dict[str, Any] = {
    "name": TEXT, "description": OPTIONAL_TEXT, "unit_price": AMOUNT, "currency": CURRENCY, "tax_rate": PERCENT,
    "active": {"type": "boolean"},
}
STAGE_DEFINITION = _object(["key", "name", "probability", "kind"], {
    "key": {"type": "string", "pattern": "^[a-z0-9_]{1,60}$"}, "name": TEXT, "probability": PERCENT,
    "kind": {"enum": ["open", WON, LOST]},
})
REASONS = {"type": "array", "items": _object(["code", "label"], {
    "code": {"type": "string", "pattern": REASON_CODE}, "label": TEXT})}
PIPELINE_SETTINGS: dict[str, Any] = {
    "win_reasons": {**REASONS, "description": "the reasons a deal may be won for, in the order offered"},
    "loss_reasons": {**REASONS, "description": "the reasons a deal may be lost for, in the order offered"},
    "free_text_reasons": {"type": "boolean", "description": "whether a won or lost deal's reason may be words "
                                                            "instead of one of the codes"},
}
# why a deal was won or lost (added to DealWon and DealLost later, so optional)
CLOSING_REASON: dict[str, Any] = {
    "reason_code": {"type": "string", "pattern": REASON_CODE,
                    "description": "the pipeline's reason code, when one was chosen (not personal: BI groups by it)"},
    "reason_note": {**TEXT, "description": "free text given with the reason (personal, sealed)"},
}
DEAL_FIELDS: dict[str, Any] = {
    "title": TEXT, "company_id": OPTIONAL_TEXT, "owner": OPTIONAL_TEXT, "amount": AMOUNT, "currency": CURRENCY,
    "expected_close": DATE,
}
# the owning team (added later, optional: team-scoped roles see only their team's records)
TEAM = {"type": ["string", "null"], "maxLength": 100,
        "description": "the owning team (added later: absent in older events); team-scoped roles see only its records"}
ACTIVITY_FIELDS: dict[str, Any] = {
    "type": {"enum": list(ACTIVITY_TYPES)}, "subject": TEXT, "notes": OPTIONAL_TEXT, "due_at": TIME,
    "owner": OPTIONAL_TEXT, "deal_id": OPTIONAL_ID, "contact_id": OPTIONAL_ID,
}
QUOTE_LINE = _object(
    ["product_id", "sku", "description", "quantity", "unit_price", "discount_percent", "tax_rate", "discount", "net",
     "tax", "total"],
    {"product_id": OPTIONAL_ID, "sku": OPTIONAL_TEXT, "description": {"type": "string"}, "quantity": DECIMAL,
     "unit_price": AMOUNT, "discount_percent": PERCENT, "tax_rate": PERCENT, "discount": AMOUNT, "net": AMOUNT,
     "tax": AMOUNT, "total": AMOUNT},
)
QUOTE_NUMBER = {"type": "string", "pattern": "^Q-[0-9]{4}-[0-9]{6,}$"}
REPOINTED = {"enum": ["contact_merged", "contact_unmerged", "reassigned"],
             "description": "why: the contact was merged into `to`; a merge was reversed (back to the duplicate "
                            "`to`); or a person gave the deal to `to` (the last two added later: new values)"}
MERGE_ID = {**ID, "description": "the contacts service's ContactMerged event that caused the move (or whose "
                                 "reversal did); also the envelope's causationid"}


def _erased(kind: str, id_field: str, example_id: str, dropped: str) -> EventType:
    """`<Kind>CustomerDataErased`: the reaction of sales to the contacts service's ContactErased."""
    return EventType(
        f"{kind}CustomerDataErased", 1, kind.lower(),
        f"The {kind.lower()}'s contact was erased: {dropped} read as null from here on (the record's key is "
        "destroyed, so earlier events' sealed fields stay unreadable too).",
        _object([id_field, "contact_id", "at"], {id_field: ID, "contact_id": ID, "at": TIME}),
        {id_field: example_id, "contact_id": "01a2…", "at": "2027-02-01T08:00:00.000Z"},
    )

EVENTS = Catalogue("sales", "Sales", [
    EventType(
        "ProductCreated", 1, "product", "A product (SKU, price, tax rate) was added to the catalogue.",
        _object(["product_id", "sku", *PRODUCT_FIELDS], {"product_id": ID, "sku": TEXT, **PRODUCT_FIELDS}),
        {"product_id": "01b1…", "sku": "SUB-PRO-12", "name": "Pro subscription (12 months)", "description": None,
         "unit_price": "1200.00", "currency": "USD", "tax_rate": "9", "active": True},
    ),
    EventType(
        "ProductUpdated", 1, "product", "Fields of a product changed; `changes` holds the new values.",
        _object(["product_id", "changes"], {"product_id": ID, "changes": _changes(PRODUCT_FIELDS)}),
        {"product_id": "01b1…", "changes": {"unit_price": "1100.00", "active": False}},
    ),
    EventType(
        "PipelineCreated", 1, "pipeline",
        "A sales pipeline was defined: its open stages in order with win probabilities, then `won` and `lost`; "
        "and the reasons deals are won and lost for (added later: a pipeline defined before has none of the three "
        "fields, and offers the default reasons with `free_text_reasons` true).",
        _object(["pipeline_id", "name", "stages"], {
            "pipeline_id": ID, "name": TEXT,
            "stages": {"type": "array", "items": STAGE_DEFINITION, "minItems": 3}, **PIPELINE_SETTINGS}),
        {"pipeline_id": "default", "name": "Default", "stages": [
            {"key": "qualification", "name": "Qualification", "probability": "10", "kind": "open"},
            {"key": "won", "name": "Won", "probability": "100", "kind": "won"},
            {"key": "lost", "name": "Lost", "probability": "0", "kind": "lost"}],
         "win_reasons": [{"code": "price", "label": "Price"}, {"code": "relationship", "label": "Relationship"}],
         "loss_reasons": [{"code": "competitor", "label": "Chose a competitor"},
                          {"code": "no_decision", "label": "No decision"}],
         "free_text_reasons": True},
    ),
    EventType(
        "PipelineUpdated", 1, "pipeline",
        "A pipeline was renamed or its reasons changed; `changes` holds the new values (closed deals keep theirs).",
        _object(["pipeline_id", "changes"], {"pipeline_id": ID, "changes": _changes({"name": TEXT,
                                                                                    **PIPELINE_SETTINGS})}),
        {"pipeline_id": "01b5…", "changes": {"loss_reasons": [{"code": "price", "label": "Price"}],
                                             "free_text_reasons": False}},
    ),
    EventType(
        "DealCreated", 1, "deal", "A deal was opened for a contact, in an open stage of a pipeline.",
        _object(["deal_id", "contact_id", "pipeline_id", "stage", "at", *DEAL_FIELDS], {
            "deal_id": ID, "contact_id": ID, "pipeline_id": ID, "stage": OPEN_STAGE, "at": TIME, **DEAL_FIELDS,
            "team": TEAM}),
        {"deal_id": "01b2…", "contact_id": "01a2…", "pipeline_id": "default", "stage": "qualification",
         "at": "2026-11-26T08:00:00.000Z", "title": "Pro for Acme", "company_id": None, "owner": "ana", "team": "north",
         "amount": "12000.00", "currency": "USD", "expected_close": "2026-12-31"},
        personal=PERSONAL_DATA["DealCreated"],
    ),
    EventType(
        "DealUpdated", 1, "deal", "Fields of a deal changed; `changes` holds the new values.",
        _object(["deal_id", "changes"], {"deal_id": ID, "changes": _changes({**DEAL_FIELDS, "team": TEAM})}),
        {"deal_id": "01b2…", "changes": {"amount": "15000.00", "expected_close": "2027-01-15"}},
        personal=PERSONAL_DATA["DealUpdated"],
    ),
    EventType(
        "DealStageChanged", 1, "deal", "An open deal moved to another open stage (with that stage's probability).",
        _object(["deal_id", "from", "to", "probability", "at"], {
            "deal_id": ID, "from": OPEN_STAGE, "to": OPEN_STAGE, "probability": PERCENT, "at": TIME}),
        {"deal_id": "01b2…", "from": "qualification", "to": "proposal", "probability": "50",
         "at": "2026-11-27T08:00:00.000Z"},
    ),
    EventType(
        "DealWon", 1, "deal",
        "The deal was won at `amount` (the accepted quote's total when `quote_id` is given): revenue for the contact; "
        "why, when given: `reason_code` (one of the pipeline's win reasons), `reason` (that reason's label, or the "
        "words given) and `reason_note`.",
        _object(["deal_id", "contact_id", "from", "amount", "currency", "at"], {
            "deal_id": ID, "contact_id": ID, "from": OPEN_STAGE, "amount": AMOUNT, "currency": CURRENCY, "at": TIME,
            "quote_id": ID, "reason": {**TEXT, "description": "why, in words (personal, sealed)"},
            **CLOSING_REASON}),
        {"deal_id": "01b2…", "contact_id": "01a2…", "from": "negotiation", "amount": "13080.00", "currency": "USD",
         "at": "2026-12-20T08:00:00.000Z", "quote_id": "01b4…", "reason_code": "relationship",
         "reason": "Relationship", "reason_note": "they trust our support team"},
        personal=PERSONAL_DATA["DealWon"],
    ),
    EventType(
        "DealLost", 1, "deal",
        "The deal was lost, and why: `reason` in words (the label of the pipeline's loss reason `reason_code` when "
        "one was chosen, else the words given; before codes existed, always the words), and `reason_note`.",
        _object(["deal_id", "from", "reason", "at"], {
            "deal_id": ID, "from": OPEN_STAGE, "reason": {**TEXT, "description": "why, in words (personal, sealed)"},
            "at": TIME, **CLOSING_REASON}),
        {"deal_id": "01b2…", "from": "proposal", "reason": "Chose a competitor", "reason_code": "competitor",
         "reason_note": "they bundle support", "at": "2026-12-20T08:00:00.000Z"},
        personal=PERSONAL_DATA["DealLost"],
    ),
    EventType(
        "DealReopened", 1, "deal",
        "A won or lost deal is open again, in the open stage it was in before it closed (a won deal's revenue is "
        "withdrawn).",
        _object(["deal_id", "from", "to", "at"], {
            "deal_id": ID, "from": {"enum": [WON, LOST]}, "to": OPEN_STAGE, "at": TIME}),
        {"deal_id": "01b2…", "from": "lost", "to": "proposal", "at": "2026-12-22T08:00:00.000Z"},
    ),
    EventType(
        "DealContactChanged", 1, "deal",
        "The deal now belongs to another contact: its contact was merged (`merge_id` names the merge), that merge "
        "was reversed, or a person reassigned it.",
        _object(["deal_id", "from", "to", "reason"],
                {"deal_id": ID, "from": ID, "to": ID, "reason": REPOINTED, "merge_id": MERGE_ID}),
        {"deal_id": "01b2…", "from": "01a3…", "to": "01a2…", "reason": "contact_merged"},
    ),
    _erased("Deal", "deal_id", "01b2…", "its title and its win or loss reason's words and note (not the code)"),
    EventType(
        "ActivityScheduled", 1, "activity", "A call, meeting, task or email was scheduled (for a deal or contact).",
        _object(["activity_id", *ACTIVITY_FIELDS], {"activity_id": ID, **ACTIVITY_FIELDS, "team": TEAM}),
        {"activity_id": "01b3…", "type": "call", "subject": "Discovery call", "notes": None,
         "due_at": "2026-11-28T10:00:00.000Z", "owner": "ana", "team": "north", "deal_id": "01b2…",
         "contact_id": "01a2…"},
        personal=PERSONAL_DATA["ActivityScheduled"],
    ),
    EventType(
        "ActivityCompleted", 1, "activity", "The activity was done, with its outcome.",
        _object(["activity_id", "at", "outcome"], {"activity_id": ID, "at": TIME, "outcome": OPTIONAL_TEXT}),
        {"activity_id": "01b3…", "at": "2026-11-28T10:40:00.000Z", "outcome": "interested; send a proposal"},
        personal=PERSONAL_DATA["ActivityCompleted"],
    ),
    EventType(
        "ActivityContactChanged", 1, "activity",
        "The activity now belongs to another contact: its contact was merged (`merge_id` names the merge) or "
        "that merge was reversed.",
        _object(["activity_id", "from", "to", "reason"], {
            "activity_id": ID, "from": OPTIONAL_ID, "to": ID, "reason": REPOINTED, "merge_id": MERGE_ID}),
        {"activity_id": "01b3…", "from": "01a3…", "to": "01a2…", "reason": "contact_merged"},
    ),
    _erased("Activity", "activity_id", "01b3…", "its subject, notes and outcome"),
    EventType(
        "QuoteDrafted", 1, "quote",
        "A quote was drafted for a deal: priced lines (every amount rounded to the currency) and exact totals.",
        _object(["quote_id", "number", "deal_id", "contact_id", "currency", "valid_until", "locale", "notes", "lines",
                 "subtotal", "discount", "tax", "total"], {
            "quote_id": ID, "number": QUOTE_NUMBER, "deal_id": ID, "contact_id": ID, "currency": CURRENCY,
            "valid_until": {"type": "string", "format": "date"}, "locale": OPTIONAL_TEXT, "notes": OPTIONAL_TEXT,
            "lines": {"type": "array", "items": QUOTE_LINE, "minItems": 1},
            "subtotal": AMOUNT, "discount": AMOUNT, "tax": AMOUNT, "total": AMOUNT}),
        {"quote_id": "01b4…", "number": "Q-2026-000042", "deal_id": "01b2…", "contact_id": "01a2…",
         "currency": "USD", "valid_until": "2026-12-31", "locale": "en", "notes": None,
         "lines": [{"product_id": "01b1…", "sku": "SUB-PRO-12", "description": "Pro subscription (12 months)",
                    "quantity": "10", "unit_price": "1200.00", "discount_percent": "0", "tax_rate": "9",
                    "discount": "0.00", "net": "12000.00", "tax": "1080.00", "total": "13080.00"}],
         "subtotal": "12000.00", "discount": "0.00", "tax": "1080.00", "total": "13080.00"},
        personal=PERSONAL_DATA["QuoteDrafted"],
    ),
    EventType(
        "QuoteIssued", 1, "quote", "The quote was sent to the customer.",
        _object(["quote_id", "number", "deal_id", "contact_id", "total", "currency", "valid_until", "at"], {
            "quote_id": ID, "number": QUOTE_NUMBER, "deal_id": ID, "contact_id": ID, "total": AMOUNT,
            "currency": CURRENCY, "valid_until": {"type": "string", "format": "date"}, "at": TIME}),
        {"quote_id": "01b4…", "number": "Q-2026-000042", "deal_id": "01b2…", "contact_id": "01a2…",
         "total": "13080.00", "currency": "USD", "valid_until": "2026-12-31", "at": "2026-12-01T08:00:00.000Z"},
    ),
    EventType(
        "QuoteAccepted", 1, "quote", "The customer accepted the quote (its deal is then usually won at its total).",
        _object(["quote_id", "number", "deal_id", "contact_id", "total", "currency", "at"], {
            "quote_id": ID, "number": QUOTE_NUMBER, "deal_id": ID, "contact_id": ID, "total": AMOUNT,
            "currency": CURRENCY, "at": TIME}),
        {"quote_id": "01b4…", "number": "Q-2026-000042", "deal_id": "01b2…", "contact_id": "01a2…",
         "total": "13080.00", "currency": "USD", "at": "2026-12-20T08:00:00.000Z"},
    ),
    EventType(
        "QuoteRejected", 1, "quote", "The customer rejected the quote (a reason when given).",
        _object(["quote_id", "deal_id", "reason", "at"], {
            "quote_id": ID, "deal_id": ID, "reason": OPTIONAL_TEXT, "at": TIME}),
        {"quote_id": "01b4…", "deal_id": "01b2…", "reason": "too expensive", "at": "2026-12-20T08:00:00.000Z"},
        personal=PERSONAL_DATA["QuoteRejected"],
    ),
    EventType(
        "QuoteExpired", 1, "quote", "A sent quote passed its validity date unanswered.",
        _object(["quote_id", "deal_id", "at"], {"quote_id": ID, "deal_id": ID, "at": TIME}),
        {"quote_id": "01b4…", "deal_id": "01b2…", "at": "2027-01-01T00:05:00.000Z"},
    ),
    _erased("Quote", "quote_id", "01b4…", "its notes, its lines' descriptions and the rejection reason"),
    EventType(
        "CustomerTierChanged", 1, "customer",
        "A customer's tier moved (strategic: the top 20% by historic CLV); the subject is the contact id.",
        _object(["contact_id", "tier", "previous_tier", "clv"], {
            "contact_id": ID, "tier": {"enum": list(TIERS)}, "previous_tier": {"enum": list(TIERS)},
            "clv": _object(["amount", "currency"], {"amount": AMOUNT, "currency": CURRENCY})}),
        {"contact_id": "01a2…", "tier": "strategic", "previous_tier": "standard",
         "clv": {"amount": "13080.00", "currency": "USD"}},
    ),
])
