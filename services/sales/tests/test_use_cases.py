"""The sales use cases on the in-memory event store and in-memory views: no server, milliseconds each.

`SalesUseCases` is the code the REST/gRPC edges and the worker call; here it runs on
`crmkit.memstore.InMemoryEventStore` (the store contract, checked against MongoDB's by
libs/crmkit/tests/test_crmkit_store_contract.py) and `MemoryViews`, which keeps the read
models as the projections do: each saved stream is folded again into its document. Inputs
go through the edge's schemas (and `api.plain`), so the use cases get what REST hands them.
The edges' contracts stay tested by test_api.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from crm_sales import api, schemas
from crm_sales.app import SERVICE
from crm_sales.commands import SalesUseCases
from crm_sales.domain import Activity, Deal, Pipeline, Product, Quote
from crm_sales.views import ACTIVITY_FILTERS, DEAL_FILTERS, QUOTE_FILTERS, Page
from crmkit.aggregate import Aggregate
from crmkit.errors import Conflict, NotFound, PreconditionFailed, ValidationFailed
from crmkit.events import Metadata, RecordedEvent, epoch_ms, parse_time
from crmkit.memstore import InMemoryEventStore

SELLER = Metadata(actor="user:ana")
KINDS: dict[str, type[Aggregate]] = {kind.aggregate_type: kind for kind in (Product, Pipeline, Deal, Activity, Quote)}
COLLECTIONS = {Product: "products", Pipeline: "pipelines", Deal: "deals", Activity: "activities", Quote: "quotes"}


class MemoryViews:
    """`SalesViews` on dicts: each read model's documents refolded from the store on every save."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self.store = store
        self.docs: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in COLLECTIONS.values()}
        self.counters: dict[int, int] = {}
        self.known_contacts: dict[str, dict[str, Any]] = {}

    def project(self, events: Sequence[RecordedEvent]) -> None:
        """What the worker's projections do, at once: the documents of the streams just saved."""
        for stream_id in {event.stream_id for event in events}:
            stored = self.store.load(stream_id)
            kind = KINDS.get(stored[0].aggregate_type)
            if kind is None:
                continue
            record = kind.from_events(stream_id, stored)
            doc = {**record.view(), "_id": stream_id}
            if kind is Activity:
                doc["due_ms"] = epoch_ms(parse_time(doc["due_at"]))
            self.docs[COLLECTIONS[kind]][stream_id] = doc

    def sku_taken(self, sku: str) -> bool:
        return any(doc["sku"] == sku for doc in self.docs["products"].values())

    def product_page(self, query: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        return self._page(
            [
                doc
                for doc in self.docs["products"].values()
                if query.get("active") is None or doc["active"] == query["active"]
            ],
            limit,
            cursor,
        )

    def deal_page(self, query: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        return self._page(self._matching("deals", query, DEAL_FILTERS), limit, cursor)

    def activity_page(self, query: Mapping[str, Any], now_ms: int, limit: int, cursor: str | None) -> Page:
        before = min(
            epoch_ms(query["due_before"]) if query.get("due_before") else 2**62,
            now_ms if query.get("overdue") else 2**62,
        )
        docs = [
            doc
            for doc in self._matching("activities", query, ACTIVITY_FILTERS)
            if doc["due_ms"] < before and (not query.get("overdue") or doc["status"] == "open")
        ]
        return self._page(docs, limit, cursor)

    def quote_page(self, query: Mapping[str, Any], limit: int, cursor: str | None) -> Page:
        return self._page(self._matching("quotes", query, QUOTE_FILTERS), limit, cursor)

    def expiring_quotes(self, today: str, limit: int) -> list[str]:
        return [
            doc["_id"] for doc in self.docs["quotes"].values() if doc["status"] == "sent" and doc["valid_until"] < today
        ][:limit]

    def next_quote_sequence(self, year: int) -> int:
        self.counters[year] = self.counters.get(year, 0) + 1
        return self.counters[year]

    def contacts(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {cid: {"_id": cid, **self.known_contacts[cid]} for cid in contact_ids if cid in self.known_contacts}

    def remember_contact(self, contact: dict[str, Any]) -> None:
        self.known_contacts[contact["id"]] = dict(contact)

    def _matching(self, name: str, query: Mapping[str, Any], keys: Sequence[str]) -> list[dict[str, Any]]:
        return [doc for doc in self.docs[name].values() if all(doc.get(k) == query[k] for k in keys if query.get(k))]

    @staticmethod
    def _page(docs: list[dict[str, Any]], limit: int, cursor: str | None) -> Page:
        rest = sorted((doc for doc in docs if cursor is None or doc["_id"] > cursor), key=lambda doc: doc["_id"])
        return rest[:limit], rest[limit - 1]["_id"] if len(rest) > limit else None


class Directory:
    """The contacts service as sales asks it: a contact by id, or NotFound."""

    def __init__(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}
        self.asked: list[str] = []

    def add(self, contact_id: str, status: str = "active") -> str:
        self.people[contact_id] = {"id": contact_id, "first_name": "Sara", "last_name": contact_id, "status": status}
        return contact_id

    def get(self, contact_id: str) -> dict[str, Any]:
        self.asked.append(contact_id)
        if contact_id not in self.people:
            raise NotFound(f"no contact with id {contact_id}")
        return self.people[contact_id]


class World:
    """The sales use cases and what they run on, with what they published and shredded, at a set time."""

    def __init__(self) -> None:
        self.store = InMemoryEventStore("sales", references=SERVICE.references)  # as the service runs
        self.views = MemoryViews(self.store)
        self.directory = Directory()
        self.published: list[RecordedEvent] = []
        self.shredded: list[tuple[list[str], list[str]]] = []
        self.time = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        self.sales = SalesUseCases(
            self.store,
            self.views,
            self.publish,
            self.directory,  # type: ignore[arg-type]
            lambda: self.time,
            lambda ids, paths: self.shredded.append((list(ids), list(paths))),
        )
        self.sales.ensure_default_pipeline()

    def publish(self, events: list[RecordedEvent]) -> None:
        self.published += events
        self.views.project(events)

    def types(self, stream_id: str) -> list[str]:
        return [event.type for event in self.store.load(stream_id)]

    def product(self, sku: str, price: str = "20.00", **fields: Any) -> Product:
        body = {"sku": sku, "name": f"Widget {sku}", "unit_price": price, "currency": "USD", **fields}
        return self.sales.create_product(api.plain(schemas.ProductInput().load(body)), SELLER)

    def deal(self, contact_id: str, **fields: Any) -> Deal:
        body = {"title": "Fleet renewal", "contact_id": contact_id, "amount": "1000", "currency": "USD", **fields}
        return self.sales.create_deal(api.plain(schemas.DealInput().load(body)), SELLER)


@pytest.fixture
def world() -> World:
    return World()


def test_a_product_is_created_once_per_sku_and_repriced_to_the_currencys_cents(world: World) -> None:
    product = world.product("W-1", "19.5", tax_rate="8")
    assert (product.unit_price, product.currency, product.tax_rate, product.active) == ("19.50", "USD", "8", True)
    with pytest.raises(ValidationFailed) as duplicate:
        world.product("W-1")
    assert duplicate.value.errors == {"sku": ["a product with SKU W-1 exists"]}
    repriced = world.sales.update_product(
        product.id, api.plain(schemas.ProductPatch().load({"unit_price": "25.5"})), SELLER, if_match=1
    )
    assert repriced.unit_price == "25.50"
    updated = world.store.load(product.id)[1]
    assert updated.type == "ProductUpdated" and updated.data["changes"] == {"unit_price": "25.50"}
    with pytest.raises(ValidationFailed) as bad:  # yen have no cents
        world.sales.update_product(product.id, {"currency": "JPY", "unit_price": "10.5"}, SELLER, None)
    assert list(bad.value.errors) == ["unit_price"]
    with pytest.raises(PreconditionFailed):
        world.sales.update_product(product.id, {"active": False}, SELLER, if_match=1)  # a stale version
    assert world.types(product.id) == ["ProductCreated", "ProductUpdated"]
    world.sales.update_product(product.id, {"active": False}, SELLER, if_match=2)
    pages = [world.sales.list_products({"limit": 10, "active": active})[0] for active in (True, False, None)]
    assert [[doc["sku"] for doc in docs] for docs in pages] == [[], ["W-1"], ["W-1"]]


def test_a_deal_needs_a_known_living_contact_and_a_pipeline(world: World) -> None:
    world.directory.add("gone", status="erased")
    for contact_id, message in (("nobody", "no contact with id nobody"), ("gone", "the contact was erased")):
        with pytest.raises(ValidationFailed) as refused:
            world.deal(contact_id)
        assert refused.value.errors == {"contact_id": [message]}
    with pytest.raises(ValidationFailed) as refused:
        world.deal("nobody", pipeline_id="nowhere")
    assert set(refused.value.errors) == {"contact_id", "pipeline_id"}  # every bad field at once
    before = world.store.count()
    deal = world.deal(world.directory.add("c1"), amount="1250.5")
    assert world.store.count() == before + 1 and world.types(deal.id) == ["DealCreated"]
    assert (deal.stage, deal.status, deal.amount, deal.pipeline_id) == ("qualification", "open", "1250.50", "default")
    view = world.sales.deal_view(deal)
    assert view["contact"]["last_name"] == "c1"  # kept locally when contacts answered
    assert world.sales.list_deals({"limit": 5, "contact_id": "c1"})[0][0]["contact"]["id"] == "c1"


def test_a_deal_moves_through_open_stages_and_closes_with_its_pipelines_reasons(world: World) -> None:
    deal = world.deal(world.directory.add("c2"))
    moved = world.sales.move_deal(deal.id, "proposal", SELLER, if_match=1)
    assert moved.stage == "proposal" and moved.version == 2
    with pytest.raises(PreconditionFailed):
        world.sales.move_deal(deal.id, "negotiation", SELLER, if_match=1)  # someone moved it meanwhile
    with pytest.raises(Conflict):
        world.sales.move_deal(deal.id, "won", SELLER, None)  # won by winning, not moving
    with pytest.raises(ValidationFailed):
        world.sales.move_deal(deal.id, "nowhere", SELLER, None)
    with pytest.raises(ValidationFailed) as no_reason:
        world.sales.lose_deal(deal.id, None, None, SELLER, None)
    assert no_reason.value.errors == {"reason": ["required"]}
    lost = world.sales.lose_deal(deal.id, "competitor", "went with Acme", SELLER, if_match=2)
    assert lost.status == "lost"
    data = world.store.load(deal.id)[-1].data
    assert (data["reason_code"], data["reason"], data["reason_note"]) == (
        "competitor",
        "Chose a competitor",
        "went with Acme",
    )
    with pytest.raises(Conflict):
        world.sales.win_deal(deal.id, None, None, SELLER, None)  # closed: reopen first
    world.sales.reopen_deal(deal.id, SELLER, None)
    won = world.sales.win_deal(deal.id, "price", None, SELLER, None)
    assert won.status == "won" and world.store.load(deal.id)[-1].data["reason_code"] == "price"
    assert world.types(deal.id) == ["DealCreated", "DealStageChanged", "DealLost", "DealReopened", "DealWon"]
    assert [doc["id"] for doc in world.sales.list_deals({"limit": 5, "status": "won"})[0]] == [deal.id]


def test_a_quote_prices_product_and_free_lines_numbers_itself_and_wins_its_deal(world: World) -> None:
    product = world.product("W-2", "20", tax_rate="10")
    deal = world.deal(world.directory.add("c3"))
    body = {
        "deal_id": deal.id,
        "valid_until": "2026-03-31",
        "lines": [
            {"product_id": product.id, "quantity": "3", "discount_percent": "10"},
            {"description": "Installation", "unit_price": "50", "quantity": "1"},
        ],
    }
    quote = world.sales.draft_quote(schemas.QuoteInput().load(body), SELLER)
    assert quote.number == "Q-2026-000001" and quote.deal_id == deal.id
    # 3 x 20 = 60, less 10 % = 54 net, plus 10 % tax = 5.40; the free line: 50 net, untaxed by default
    assert quote.totals == {"subtotal": "104.00", "discount": "6.00", "tax": "5.40", "total": "109.40"}
    assert world.sales.draft_quote(schemas.QuoteInput().load(body), SELLER).number == "Q-2026-000002"
    sent = world.sales.send_quote(quote.id, SELLER, if_match=1)
    assert sent.status == "sent"
    accepted, won = world.sales.accept_quote(quote.id, True, SELLER, None)
    assert accepted.status == "accepted" and won.status == "won" and won.amount == "109.40"
    assert world.store.load(deal.id)[-1].data["quote_id"] == quote.id
    assert world.types(quote.id) == ["QuoteDrafted", "QuoteIssued", "QuoteAccepted"]


def test_a_quote_refuses_unknown_products_past_dates_and_expires_when_sent_and_late(world: World) -> None:
    deal = world.deal(world.directory.add("c4"))
    bad = {"deal_id": deal.id, "valid_until": "2026-03-01", "lines": [{"product_id": "nope", "quantity": "1"}]}
    with pytest.raises(ValidationFailed) as refused:
        world.sales.draft_quote(schemas.QuoteInput().load(bad), SELLER)
    assert set(refused.value.errors) == {"lines.0.product_id", "valid_until"}
    with pytest.raises(ValidationFailed):
        world.sales.draft_quote(schemas.QuoteInput().load({**bad, "deal_id": "none"}), SELLER)
    body = {
        "deal_id": deal.id,
        "valid_until": "2026-03-05",
        "lines": [{"description": "Audit", "unit_price": "100", "quantity": "1"}],
    }
    quote = world.sales.draft_quote(schemas.QuoteInput().load(body), SELLER)
    world.sales.send_quote(quote.id, SELLER, None)
    assert world.sales.expire_quotes() == 0
    world.time += timedelta(days=4)
    assert world.sales.expire_quotes() == 1 and world.sales.expire_quotes() == 0  # once
    assert world.types(quote.id) == ["QuoteDrafted", "QuoteIssued", "QuoteExpired"]
    assert world.sales.list_quotes({"limit": 5, "status": "expired"})[0][0]["id"] == quote.id


def test_activities_are_scheduled_for_a_deals_contact_completed_once_and_listed_when_overdue(world: World) -> None:
    deal = world.deal(world.directory.add("c5"))
    asked = len(world.directory.asked)
    body = {"type": "call", "subject": "Follow up", "due_at": "2026-03-03T10:00:00Z", "deal_id": deal.id}
    activity = world.sales.schedule_activity(schemas.ActivityInput().load(body), SELLER)
    assert activity.contact_id == "c5" and world.types(activity.id) == ["ActivityScheduled"]
    assert len(world.directory.asked) == asked  # the contact's local copy sufficed
    with pytest.raises(ValidationFailed) as refused:
        world.sales.schedule_activity(schemas.ActivityInput().load({**body, "deal_id": "none"}), SELLER)
    assert refused.value.errors == {"deal_id": ["no deal with id none"]}
    assert world.sales.list_activities({"limit": 5, "overdue": True})[0] == []
    world.time = datetime(2026, 3, 4, tzinfo=UTC)
    assert [doc["id"] for doc in world.sales.list_activities({"limit": 5, "overdue": True})[0]] == [activity.id]
    done = world.sales.complete_activity(activity.id, "agreed", SELLER, if_match=1)
    assert done.status == "completed" and done.outcome == "agreed"
    with pytest.raises(Conflict):
        world.sales.complete_activity(activity.id, "again", SELLER, None)
    assert world.sales.list_activities({"limit": 5, "overdue": True})[0] == []


def test_erasing_a_contact_scrubs_their_records_and_shreds_their_keys_and_responses(world: World) -> None:
    deal = world.deal(world.directory.add("c6"))
    quote = world.sales.draft_quote(
        schemas.QuoteInput().load(
            {
                "deal_id": deal.id,
                "valid_until": date(2026, 4, 1),
                "lines": [{"description": "Audit", "unit_price": "100", "quantity": "1"}],
            }
        ),
        SELLER,
    )
    assert world.sales.erase_contact("c6") == 2
    assert world.types(deal.id)[-1] == "DealCustomerDataErased"
    assert world.types(quote.id)[-1] == "QuoteCustomerDataErased"
    assert world.shredded == [([deal.id, quote.id], [f"/v1/deals/{deal.id}", f"/v1/quotes/{quote.id}"])]
