"""Every event the sales service emits, for `make catalogue` (docs/events/) and the strict check.

Each type's meaning, JSON Schema and personal fields come from its class, declared with its
aggregate (`domain.Product`, `Pipeline`, `Deal`, `Activity`, `Quote`, `Customer`;
crmkit.domainevents): here only an example of each. With CRM_STRICT_EVENTS=1 (tests) the event
store refuses anything not described here (docs/events-versioning.md). A contact is referred to
by its id; what sales writes about the person (deal titles, activity subjects, notes and
outcomes, quote notes and line texts, reasons) is personal and sealed (`domain.PERSONAL_DATA`).
Money is a decimal string with exactly the currency's minor-unit decimals, plus the currency.
"""

from __future__ import annotations

from crm_sales.domain import Activity, Customer, Deal, Pipeline, Product, Quote
from crmkit.catalogue import Catalogue, EventType

EVENTS = Catalogue(
    "sales",
    "Sales",
    [
        EventType.of(
            Product.ProductCreated,
            {
                "product_id": "01b1…",
                "sku": "SUB-PRO-12",
                "name": "Pro subscription (12 months)",
                "description": None,
                "unit_price": "1200.00",
                "currency": "USD",
                "tax_rate": "9",
                "active": True,
            },
        ),
        EventType.of(
            Product.ProductUpdated,
            {"product_id": "01b1…", "changes": {"unit_price": "1100.00", "active": False}},
        ),
        EventType.of(
            Pipeline.PipelineCreated,
            {
                "pipeline_id": "default",
                "name": "Default",
                "stages": [
                    {"key": "qualification", "name": "Qualification", "probability": "10", "kind": "open"},
                    {"key": "won", "name": "Won", "probability": "100", "kind": "won"},
                    {"key": "lost", "name": "Lost", "probability": "0", "kind": "lost"},
                ],
                "win_reasons": [{"code": "price", "label": "Price"}, {"code": "relationship", "label": "Relationship"}],
                "loss_reasons": [
                    {"code": "competitor", "label": "Chose a competitor"},
                    {"code": "no_decision", "label": "No decision"},
                ],
                "free_text_reasons": True,
            },
        ),
        EventType.of(
            Pipeline.PipelineUpdated,
            {
                "pipeline_id": "01b5…",
                "changes": {"loss_reasons": [{"code": "price", "label": "Price"}], "free_text_reasons": False},
            },
        ),
        EventType.of(
            Deal.DealCreated,
            {
                "deal_id": "01b2…",
                "contact_id": "01a2…",
                "pipeline_id": "default",
                "stage": "qualification",
                "at": "2026-11-26T08:00:00.000Z",
                "title": "Pro for Acme",
                "company_id": None,
                "owner": "ana",
                "team": "north",
                "amount": "12000.00",
                "currency": "USD",
                "expected_close": "2026-12-31",
            },
        ),
        EventType.of(
            Deal.DealUpdated,
            {"deal_id": "01b2…", "changes": {"amount": "15000.00", "expected_close": "2027-01-15"}},
        ),
        EventType.of(
            Deal.DealStageChanged,
            {
                "deal_id": "01b2…",
                "from": "qualification",
                "to": "proposal",
                "probability": "50",
                "at": "2026-11-27T08:00:00.000Z",
            },
        ),
        EventType.of(
            Deal.DealWon,
            {
                "deal_id": "01b2…",
                "contact_id": "01a2…",
                "from": "negotiation",
                "amount": "13080.00",
                "currency": "USD",
                "at": "2026-12-20T08:00:00.000Z",
                "quote_id": "01b4…",
                "reason_code": "relationship",
                "reason": "Relationship",
                "reason_note": "they trust our support team",
            },
        ),
        EventType.of(
            Deal.DealLost,
            {
                "deal_id": "01b2…",
                "from": "proposal",
                "reason": "Chose a competitor",
                "reason_code": "competitor",
                "reason_note": "they bundle support",
                "at": "2026-12-20T08:00:00.000Z",
            },
        ),
        EventType.of(
            Deal.DealReopened,
            {"deal_id": "01b2…", "from": "lost", "to": "proposal", "at": "2026-12-22T08:00:00.000Z"},
        ),
        EventType.of(
            Deal.DealContactChanged,
            {"deal_id": "01b2…", "from": "01a3…", "to": "01a2…", "reason": "contact_merged"},
        ),
        EventType.of(
            Deal.DealCustomerDataErased,
            {"deal_id": "01b2…", "contact_id": "01a2…", "at": "2027-02-01T08:00:00.000Z"},
        ),
        EventType.of(
            Activity.ActivityScheduled,
            {
                "activity_id": "01b3…",
                "type": "call",
                "subject": "Discovery call",
                "notes": None,
                "due_at": "2026-11-28T10:00:00.000Z",
                "owner": "ana",
                "team": "north",
                "deal_id": "01b2…",
                "contact_id": "01a2…",
            },
        ),
        EventType.of(
            Activity.ActivityCompleted,
            {"activity_id": "01b3…", "at": "2026-11-28T10:40:00.000Z", "outcome": "interested; send a proposal"},
        ),
        EventType.of(
            Activity.ActivityContactChanged,
            {"activity_id": "01b3…", "from": "01a3…", "to": "01a2…", "reason": "contact_merged"},
        ),
        EventType.of(
            Activity.ActivityCustomerDataErased,
            {"activity_id": "01b3…", "contact_id": "01a2…", "at": "2027-02-01T08:00:00.000Z"},
        ),
        EventType.of(
            Quote.QuoteDrafted,
            {
                "quote_id": "01b4…",
                "number": "Q-2026-000042",
                "deal_id": "01b2…",
                "contact_id": "01a2…",
                "currency": "USD",
                "valid_until": "2026-12-31",
                "locale": "en",
                "notes": None,
                "lines": [
                    {
                        "product_id": "01b1…",
                        "sku": "SUB-PRO-12",
                        "description": "Pro subscription (12 months)",
                        "quantity": "10",
                        "unit_price": "1200.00",
                        "discount_percent": "0",
                        "tax_rate": "9",
                        "discount": "0.00",
                        "net": "12000.00",
                        "tax": "1080.00",
                        "total": "13080.00",
                    }
                ],
                "subtotal": "12000.00",
                "discount": "0.00",
                "tax": "1080.00",
                "total": "13080.00",
            },
        ),
        EventType.of(
            Quote.QuoteIssued,
            {
                "quote_id": "01b4…",
                "number": "Q-2026-000042",
                "deal_id": "01b2…",
                "contact_id": "01a2…",
                "total": "13080.00",
                "currency": "USD",
                "valid_until": "2026-12-31",
                "at": "2026-12-01T08:00:00.000Z",
            },
        ),
        EventType.of(
            Quote.QuoteAccepted,
            {
                "quote_id": "01b4…",
                "number": "Q-2026-000042",
                "deal_id": "01b2…",
                "contact_id": "01a2…",
                "total": "13080.00",
                "currency": "USD",
                "at": "2026-12-20T08:00:00.000Z",
            },
        ),
        EventType.of(
            Quote.QuoteRejected,
            {"quote_id": "01b4…", "deal_id": "01b2…", "reason": "too expensive", "at": "2026-12-20T08:00:00.000Z"},
        ),
        EventType.of(
            Quote.QuoteExpired,
            {"quote_id": "01b4…", "deal_id": "01b2…", "at": "2027-01-01T00:05:00.000Z"},
        ),
        EventType.of(
            Quote.QuoteCustomerDataErased,
            {"quote_id": "01b4…", "contact_id": "01a2…", "at": "2027-02-01T08:00:00.000Z"},
        ),
        EventType.of(
            Customer.CustomerTierChanged,
            {
                "contact_id": "01a2…",
                "tier": "strategic",
                "previous_tier": "standard",
                "clv": {"amount": "13080.00", "currency": "USD"},
            },
        ),
    ],
)
