"""The sales service's use cases: load aggregates, let them decide, save; and the queries.

`SalesUseCases` knows the event store (the `crmkit.store.Store` contract), the read side
it queries (`views.SalesViews`) and the contacts directory; never Flask, gRPC or a
collection, so the use-case tests run it on `crmkit.memstore.InMemoryEventStore` and
in-memory views, no server. `SalesBook` is the same use cases wired to a process's
`Runtime` (MongoDB), with what only the service's processes do: indexes, the local copy
of contacts the worker runs, the erasure's key shredding, the collection handles the
reports and exports query.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pymongo.collection import Collection

from crm_sales import money, reactions, settings
from crm_sales.domain import Activity, Customer, Deal, Pipeline, Product, Quote, QuoteLine
from crm_sales.views import MongoSalesViews, SalesViews
from crmkit import clock as platform_clock
from crmkit.directory import ContactDirectory, LocalContacts
from crmkit.erasure import Shred, nothing_to_shred, shredder
from crmkit.errors import NotFound, ValidationFailed
from crmkit.events import Metadata, RecordedEvent, epoch_ms, new_id, rfc3339
from crmkit.repository import Repository
from crmkit.runtime import Runtime
from crmkit.store import ConcurrencyError, Store

log = logging.getLogger(__name__)
SYSTEM = Metadata(actor="system:sales")


def contacts_directory() -> ContactDirectory:
    return ContactDirectory(deadline=settings.current().contacts_deadline)


class SalesUseCases:
    """The sales use cases on any event store and any `SalesViews`.

    `publish` is handed what each save stored (the runtime's outbox sender; a list's
    `extend` in tests); `shred(subjects, response_paths)` (crmkit.erasure) forgets what an erasure leaves
    readable outside the events (data keys, the stored responses at those paths)."""

    def __init__(
        self,
        store: Store,
        views: SalesViews,
        publish: Callable[[list[RecordedEvent]], None],
        directory: ContactDirectory,
        clock: Callable[[], datetime] = platform_clock.now,
        shred: Shred = nothing_to_shred,
    ) -> None:
        self.store = store
        self.views = views
        self.clock = clock
        self.shred = shred
        self.directory = directory
        self.products: Repository[Product] = Repository(store, Product, publish)
        self.pipelines: Repository[Pipeline] = Repository(store, Pipeline, publish)
        self.deals: Repository[Deal] = Repository(store, Deal, publish)
        self.activities: Repository[Activity] = Repository(store, Activity, publish)
        self.quotes: Repository[Quote] = Repository(store, Quote, publish)
        self.customers: Repository[Customer] = Repository(store, Customer, publish)
        # a contact's records, by kind: found in the event store at erasure (the read models may lag)
        self.erasable: dict[str, tuple[Repository[Any], str]] = {
            Deal.aggregate_type: (self.deals, "/v1/deals"),
            Activity.aggregate_type: (self.activities, "/v1/activities"),
            Quote.aggregate_type: (self.quotes, "/v1/quotes"),
        }

    def now(self) -> str:
        return rfc3339(self.clock())

    def today(self) -> date:
        return self.clock().astimezone(UTC).date()

    # --- setup ----------------------------------------------------------------------------

    def ensure_default_pipeline(self) -> None:
        """The default pipeline exists from the first start (idempotent, safe from many processes)."""
        try:
            self.pipelines.get(Pipeline.default().id)
            return
        except NotFound:
            pass
        with contextlib.suppress(ConcurrencyError):  # another process created it first
            self.pipelines.save(Pipeline.default(), SYSTEM)

    # --- products -------------------------------------------------------------------------

    def create_product(self, fields: dict[str, Any], meta: Metadata) -> Product:
        if self.views.sku_taken(fields["sku"]):
            raise ValidationFailed("duplicate SKU", {"sku": [f"a product with SKU {fields['sku']} exists"]})
        product = Product.create(new_id(), fields)
        self.products.save(product, meta)
        return product

    def update_product(self, product_id: str, fields: dict[str, Any], meta: Metadata, if_match: int | None) -> Product:
        def decide(product: Product) -> None:
            assert product.unit_price is not None and product.currency is not None  # a created product has both
            product.update(_exact_money(fields, "unit_price", product.unit_price, product.currency))

        return self.products.change(product_id, decide, meta, if_match)

    def list_products(self, query: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        return self.views.product_page(query, query["limit"], query.get("cursor"))

    # --- pipelines ------------------------------------------------------------------------

    def create_pipeline(self, fields: dict[str, Any], meta: Metadata) -> Pipeline:
        """A pipeline of `stages`; its reasons (`win_reasons`, `loss_reasons`, `free_text_reasons`)
        are the defaults unless given."""
        pipeline = Pipeline.define(new_id(), fields["name"], fields["stages"], fields)
        self.pipelines.save(pipeline, meta)
        return pipeline

    def update_pipeline(
        self, pipeline_id: str, changes: dict[str, Any], meta: Metadata, if_match: int | None
    ) -> Pipeline:
        return self.pipelines.change(pipeline_id, lambda pipeline: pipeline.update(changes), meta, if_match)

    def pipeline(self, pipeline_id: str) -> Pipeline:
        return self.pipelines.get(pipeline_id)

    # --- deals ----------------------------------------------------------------------------

    def create_deal(self, fields: dict[str, Any], meta: Metadata) -> Deal:
        errors: dict[str, list[str]] = {}
        pipeline = None
        try:
            pipeline = self.pipelines.get(fields.get("pipeline_id") or "default")
        except NotFound:
            errors["pipeline_id"] = [f"no pipeline with id {fields.get('pipeline_id')}"]
        contact = self.require_contact(fields["contact_id"], errors)
        if errors or pipeline is None or contact is None:
            raise ValidationFailed(f"{len(errors)} field(s) failed validation", errors)
        deal = Deal.create(new_id(), {**fields, "contact_id": contact["id"]}, pipeline, self.now())
        self.deals.save(deal, meta)
        return deal

    def require_contact(self, contact_id: str, errors: dict[str, list[str]]) -> dict[str, Any] | None:
        """The contact as contacts knows it now (the survivor for a merged id), or an error
        under `contact_id`; Unavailable (503) when contacts cannot be asked."""
        try:
            contact = self.directory.get(contact_id)
        except NotFound:
            errors["contact_id"] = [f"no contact with id {contact_id}"]
            return None
        if contact.get("status") == "erased":
            errors["contact_id"] = ["the contact was erased"]
            return None
        self.views.remember_contact(contact)
        return contact

    def update_deal(self, deal_id: str, fields: dict[str, Any], meta: Metadata, if_match: int | None) -> Deal:
        def decide(deal: Deal) -> None:
            deal.update(_exact_money(fields, "amount", deal.amount, deal.currency))

        return self.deals.change(deal_id, decide, meta, if_match)

    def move_deal(self, deal_id: str, stage: str, meta: Metadata, if_match: int | None) -> Deal:
        def decide(deal: Deal) -> None:
            deal.move(stage, self.pipelines.get(deal.pipeline_id), self.now())

        return self.deals.change(deal_id, decide, meta, if_match)

    def win_deal(
        self, deal_id: str, reason: str | None, note: str | None, meta: Metadata, if_match: int | None
    ) -> Deal:
        """Won, with an optional reason (checked against the deal's pipeline) and note."""

        def decide(deal: Deal) -> None:
            pipeline = self.pipelines.get(deal.pipeline_id) if reason is not None else None
            deal.win(self.now(), pipeline=pipeline, reason=reason, note=note)

        return self.deals.change(deal_id, decide, meta, if_match)

    def lose_deal(
        self, deal_id: str, reason: str | None, note: str | None, meta: Metadata, if_match: int | None
    ) -> Deal:
        """Lost, for a reason (checked against the deal's pipeline), with an optional note."""

        def decide(deal: Deal) -> None:
            deal.lose(self.pipelines.get(deal.pipeline_id), self.now(), reason, note)

        return self.deals.change(deal_id, decide, meta, if_match)

    def reopen_deal(self, deal_id: str, meta: Metadata, if_match: int | None) -> Deal:
        return self.deals.change(deal_id, lambda d: d.reopen(self.now()), meta, if_match)

    def deal(self, deal_id: str) -> Deal:
        return self.deals.get(deal_id)

    def deal_view(self, deal: Deal) -> dict[str, Any]:
        view = deal.view()
        view["stage_history"] = deal.history_view(self.clock())
        view["contact"] = self.contact_summaries([deal.contact_id]).get(deal.contact_id) if deal.contact_id else None
        return view

    def list_deals(self, query: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        docs, cursor = self.views.deal_page(query, query["limit"], query.get("cursor"))
        return self.with_contacts(docs), cursor

    def with_contacts(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Deals with their contact's name from the local projection (no call per row)."""
        names = self.contact_summaries([d["contact_id"] for d in docs if d.get("contact_id")])
        return [{**d, "contact": names.get(d.get("contact_id") or "")} for d in docs]

    def contact_summaries(self, contact_ids: list[str]) -> dict[str, dict[str, Any]]:
        found = self.views.contacts(contact_ids)
        return {
            cid: {
                "id": doc["_id"],
                "first_name": doc.get("first_name"),
                "last_name": doc.get("last_name"),
                "status": doc.get("status"),
                "lifecycle_stage": doc.get("lifecycle_stage"),
                "locale": doc.get("locale"),
            }
            for cid, doc in found.items()
        }

    def erased(self, contact_id: str | None) -> bool:
        """Whether the local copy says the contact was erased (nothing new is written about them)."""
        known = self.views.contacts([contact_id]).get(contact_id) if contact_id else None
        return known is not None and known.get("status") == "erased"

    def erase_contact(self, contact_id: str) -> int:
        """ContactErased: the person's deals, activities and quotes (and the quotes of their deals)
        record `<Kind>CustomerDataErased`, which drops titles, subjects, notes, outcomes, reasons and
        line texts from every fold; then their keys are destroyed, so the sealed copies in the store
        and on the topic read as null forever; then the stored idempotent responses that created
        them (a deal's holds the contact's name) are dropped. Safe to repeat. Returns how many records."""
        records = self._records_of(contact_id)
        at, meta = self.now(), Metadata(actor="system:contact-erasure")
        for kind, ids in records.items():
            repository, _ = self.erasable[kind]
            repository.change_many(ids, lambda record: record.erase_customer_data(contact_id, at), meta)
        self.shred(
            [rid for ids in records.values() for rid in ids],
            [f"{self.erasable[kind][1]}/{rid}" for kind, ids in records.items() for rid in ids],
        )
        return sum(len(ids) for ids in records.values())

    def _records_of(self, contact_id: str) -> dict[str, list[str]]:
        """The contact's deals, activities and quotes, plus the quotes of their deals, by kind:
        from the event store, so a record the read models have not folded yet is found too."""
        store = self.store
        found: dict[str, set[str]] = {kind: set() for kind in self.erasable}
        for stream_id, kind in store.streams_referring([contact_id], list(self.erasable)):
            found[kind].add(stream_id)  # by contact_id, or by `to` of a ...ContactChanged
        if found[Deal.aggregate_type]:
            quotes = store.streams_referring(sorted(found[Deal.aggregate_type]), [Quote.aggregate_type])
            found[Quote.aggregate_type] |= {stream_id for stream_id, _ in quotes}
        return {kind: sorted(ids) for kind, ids in found.items() if ids}

    def contact_merged(self, duplicate_id: str, survivor_id: str, merge_id: str | None = None) -> None:
        """ContactMerged: every deal and activity still the duplicate's now belongs to the survivor
        (one load and one bulk append per kind; a record changed meanwhile is decided again).
        Each move names the merge (`merge_id`, and the envelope's causation id), so an unmerge
        finds exactly these records again.

        The records are found in the event store, as at erasure: a deal created a moment before
        the merge, not yet in the read model, moves too. One the duplicate had and lost since stays.
        """
        meta = Metadata(actor="system:sales", causation_id=merge_id)
        records = self._records_of(duplicate_id)

        def move(record: Deal | Activity) -> None:
            if record.contact_id == duplicate_id:
                record.change_contact(survivor_id, "contact_merged", merge_id)

        for repository, kind in ((self.deals, Deal), (self.activities, Activity)):
            repository.change_many(records.get(kind.aggregate_type, []), move, meta)

    def contact_unmerged(self, duplicate_id: str, survivor_id: str, merge_id: str | None) -> None:
        """ContactUnmerged: the deals and activities that merge moved to the survivor, and nobody
        moved since, belong to the duplicate again (`move_back`). Found in the store by the
        duplicate's id (they were its records), so a lagging read model misses none. Safe to repeat."""
        meta = Metadata(actor="system:sales", causation_id=merge_id)
        records = self._records_of(duplicate_id)
        for repository, kind in ((self.deals, Deal), (self.activities, Activity)):
            repository.change_many(
                records.get(kind.aggregate_type, []),
                lambda record: record.move_back(duplicate_id, survivor_id, merge_id),
                meta,
            )

    def reassign_deal(self, deal_id: str, contact_id: str, meta: Metadata, if_match: int | None) -> Deal:
        """A person gives the deal to another contact (DealContactChanged, reason `reassigned`)."""
        errors: dict[str, list[str]] = {}
        contact = self.require_contact(contact_id, errors)  # the survivor for a merged id
        if contact is None:
            raise ValidationFailed(f"{len(errors)} field(s) failed validation", errors)
        return self.deals.change(deal_id, lambda deal: deal.change_contact(contact["id"], "reassigned"), meta, if_match)

    # --- activities -----------------------------------------------------------------------

    def schedule_activity(self, fields: dict[str, Any], meta: Metadata) -> Activity:
        errors: dict[str, list[str]] = {}
        if fields.get("deal_id"):
            try:
                deal = self.deals.get(fields["deal_id"])
                fields = {**fields, "contact_id": fields.get("contact_id") or deal.contact_id}
            except NotFound:
                errors["deal_id"] = [f"no deal with id {fields['deal_id']}"]
        if fields.get("contact_id"):
            known = self.views.contacts([fields["contact_id"]]).get(fields["contact_id"])
            if known is None:
                self.require_contact(fields["contact_id"], errors)
            elif known.get("status") == "erased":
                errors["contact_id"] = ["the contact was erased"]
        if errors:
            raise ValidationFailed(f"{len(errors)} field(s) failed validation", errors)
        activity = Activity.schedule(new_id(), {**fields, "due_at": rfc3339(fields["due_at"])})
        self.activities.save(activity, meta)
        return activity

    def complete_activity(
        self, activity_id: str, outcome: str | None, meta: Metadata, if_match: int | None
    ) -> Activity:
        return self.activities.change(activity_id, lambda a: a.complete(self.now(), outcome), meta, if_match)

    def list_activities(self, query: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        return self.views.activity_page(query, epoch_ms(self.clock()), query["limit"], query.get("cursor"))

    # --- quotes ---------------------------------------------------------------------------

    def next_quote_number(self) -> str:
        """Q-<year>-<6 digits>: one counter per year, `$inc` upsert (tests/compat pins it)."""
        year = self.today().year
        return f"Q-{year}-{self.views.next_quote_sequence(year):06d}"

    def draft_quote(self, fields: dict[str, Any], meta: Metadata) -> Quote:
        errors: dict[str, list[str]] = {}
        try:
            deal = self.deals.get(fields["deal_id"])
        except NotFound:
            raise ValidationFailed("unknown deal", {"deal_id": [f"no deal with id {fields['deal_id']}"]}) from None
        if self.erased(deal.contact_id):  # a new quote would be a new key: words about the person kept after all
            errors["deal_id"] = ["the deal's contact was erased"]
        lines = []
        for index, line in enumerate(fields["lines"]):
            built = self._quote_line(index, line, deal.currency, fields.get("tax_rate"), errors)
            if built is not None:
                lines.append(built)
        if fields["valid_until"] < self.today():
            errors["valid_until"] = ["must not be in the past"]
        if errors:
            raise ValidationFailed(f"{len(errors)} field(s) failed validation", errors)
        data = {**fields, "valid_until": fields["valid_until"].isoformat()}
        quote = Quote.draft(new_id(), self.next_quote_number(), deal, lines, data)
        self.quotes.save(quote, meta)
        return quote

    def _quote_line(
        self, index: int, line: dict[str, Any], currency: str, default_tax: Decimal | None, errors: dict[str, list[str]]
    ) -> QuoteLine | None:
        where = f"lines.{index}"
        product = None
        if line.get("product_id"):
            try:
                product = self.products.get(line["product_id"])
            except NotFound:
                errors[f"{where}.product_id"] = [f"no product with id {line['product_id']}"]
                return None
            if not product.active:
                errors[f"{where}.product_id"] = ["the product is not active"]
            if product.currency != currency and line.get("unit_price") is None:
                errors[f"{where}.product_id"] = [f"the product is priced in {product.currency}, the deal in {currency}"]
        elif not line.get("description") or line.get("unit_price") is None:
            errors[where] = ["a free-text line needs a description and a unit_price"]
            return None
        unit_price = line.get("unit_price")
        if unit_price is None and product is not None and product.unit_price is not None:
            unit_price = money.parse(product.unit_price)
        try:
            unit_price = money.exact(unit_price, currency) if unit_price is not None else None
        except money.MoneyError as exc:
            errors[f"{where}.unit_price"] = [str(exc)]
        if errors.get(f"{where}.product_id") or errors.get(f"{where}.unit_price") or unit_price is None:
            return None
        tax = line.get("tax_rate")
        if tax is None:
            tax = Decimal(product.tax_rate) if product is not None else (default_tax or Decimal(0))
        return QuoteLine(
            description=line.get("description") or (product.name if product and product.name else ""),
            quantity=line["quantity"],
            unit_price=unit_price,
            discount_percent=line.get("discount_percent") or Decimal(0),
            tax_rate=tax,
            product_id=product.id if product else None,
            sku=product.sku if product else None,
        )

    def quote(self, quote_id: str) -> Quote:
        return self.quotes.get(quote_id)

    def send_quote(self, quote_id: str, meta: Metadata, if_match: int | None) -> Quote:
        return self.quotes.change(quote_id, lambda q: q.send(self.now(), self.today()), meta, if_match)

    def reject_quote(self, quote_id: str, reason: str | None, meta: Metadata, if_match: int | None) -> Quote:
        return self.quotes.change(quote_id, lambda q: q.reject(self.now(), reason), meta, if_match)

    def accept_quote(
        self, quote_id: str, mark_deal_won: bool, meta: Metadata, if_match: int | None
    ) -> tuple[Quote, Deal]:
        """Accept, then (by default) mark the deal won at the quote's total.

        Two streams, two appends: if the process dies between them, accepting again
        completes the second (an accepted quote is not accepted twice).
        """
        quote = self.quotes.get(quote_id)
        if quote.status != "accepted":
            quote = self.quotes.change(quote_id, lambda q: q.accept(self.now(), self.today()), meta, if_match)

        def win(deal: Deal) -> None:
            if deal.status == "open":
                deal.win(self.now(), amount=quote.totals["total"], quote_id=quote.id)

        deal_id = quote.deal_id
        assert deal_id is not None  # a quote is made for a deal
        deal = self.deals.change(deal_id, win, meta) if mark_deal_won else self.deals.get(deal_id)
        return quote, deal

    def list_quotes(self, query: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        return self.views.quote_page(query, query["limit"], query.get("cursor"))

    def expire_quotes(self, limit: int = 500) -> int:
        """Mark sent quotes past their validity date expired (the worker's job): one load and one
        bulk append per run, not a round trip per quote. Returns how many."""
        today, now = self.today(), self.now()
        due = self.views.expiring_quotes(today.isoformat(), limit)
        decided = self.quotes.change_many(due, lambda quote: quote.expire(now, today), SYSTEM)
        return sum(decided.values())  # a quote accepted or rejected meanwhile is decided again, fresh


class SalesBook(SalesUseCases):
    """The use cases on a process's runtime: MongoDB's event store and read models (`MongoSalesViews`).

    Builds the local copy of contacts (`local`, which the worker runs as a projection; its
    hooks are this book's reactions) and keeps the read models' handles (`deals_view`,
    `quotes_view`...) for the reports, exports and tests, which query them directly."""

    def __init__(
        self,
        runtime: Runtime,
        directory: ContactDirectory | None = None,
        clock: Callable[[], datetime] = platform_clock.now,
    ) -> None:
        self.runtime = runtime
        self.db = runtime.db
        directory = directory or contacts_directory()
        self.local = LocalContacts(
            "contacts",
            self.db["contacts"],
            directory,  # its hooks: reactions.py
            service=runtime.settings.service,
            **reactions.table(self).contact_hooks(),
        )
        self.mongo_views = MongoSalesViews(self.db, self.local)
        super().__init__(
            runtime.store, self.mongo_views, runtime.publish, directory, clock, shredder(runtime.vault, self.db)
        )
        self.counters: Collection = self.mongo_views.counters
        self.deals_view: Collection = self.mongo_views.deals
        self.activities_view: Collection = self.mongo_views.activities
        self.quotes_view: Collection = self.mongo_views.quotes
        self.products_view: Collection = self.mongo_views.products
        self.pipelines_view: Collection = self.mongo_views.pipelines

    def ensure_indexes(self) -> None:
        """The event store's indexes, `refs` among them, which erasure finds a contact's records by."""
        self.runtime.store.ensure_indexes()


def _exact_money(fields: dict[str, Any], name: str, amount: str, currency: str) -> dict[str, Any]:
    """`fields` with the amount `name` as events hold money: exactly the currency's decimals
    ("1250.5" USD is "1250.50"), re-checked when the amount or the currency changes."""
    if name not in fields and "currency" not in fields:
        return fields
    currency = fields.get("currency", currency)
    try:
        value = money.exact(money.parse(fields.get(name, amount)), currency)
    except money.MoneyError as exc:
        raise ValidationFailed(str(exc), {name: [str(exc)]}) from None
    return {**fields, name: money.text(value, currency)}
