"""REST edge of the sales service."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, jsonify

from crm_sales import money, quote_html, reports, schemas
from crm_sales.commands import SalesBook
from crm_sales.projections import public
from crmkit.aggregate import changes_by_event
from crmkit.errors import NotFound, ValidationFailed
from crmkit.repository import Repository
from crmkit.web import (
    AsOfQuery,
    HistoryQuery,
    endpoint,
    if_match,
    jsonable,
    listing,
    metadata,
    page,
    resource,
    team_scope,
    teams,
)
from crmkit.web.pagination import by_version
from crmkit.web.views import HistoryEntry


def plain(values: dict[str, Any]) -> dict[str, Any]:
    """Validated input as events hold it: decimals and dates as text."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Decimal):
            value = f"{value:f}"
        elif isinstance(value, date):
            value = value.isoformat()
        out[key] = value
    return out


def blueprint(book: SalesBook) -> Blueprint:
    """The sales routes, one factory per resource; each registers its routes on the blueprint, in this
    order (the OpenAPI document lists the operations of a path in it)."""
    bp = Blueprint("sales", __name__)
    for routes in (product_routes, pipeline_routes, deal_routes, activity_routes, quote_routes, report_routes):
        routes(bp, book)
    return bp


def product_routes(bp: Blueprint, book: SalesBook) -> None:
    """/v1/products: the catalogue of what deals and quotes sell."""

    @bp.post("/v1/products")
    @endpoint("write", body=schemas.ProductInput, response=schemas.ProductView, status=201, idempotent=True)
    def create_product(body: dict[str, Any]) -> Response:
        """Create a product (SKU, name, unit price, currency, tax rate, active)."""
        product = book.create_product(plain(body), metadata())
        return resource(product.view(), 201, location=f"/v1/products/{product.id}")

    @bp.get("/v1/products")
    @endpoint("read", query=schemas.ProductListQuery, response=schemas.ProductView, many=True, teams=True)
    def list_products(query: dict[str, Any]) -> Response:
        """List products (`active` filters)."""
        docs, cursor = book.list_products(query)
        return listing([public(d) for d in docs], cursor)

    @bp.get("/v1/products/<product_id>")
    @endpoint("read", query=AsOfQuery, response=schemas.ProductView, teams=True)
    def get_product(product_id: str, query: dict[str, Any]) -> Response:
        """One product, now or as it was at `as_of`."""
        return resource(book.products.get(product_id, as_of=query.get("as_of")).view())

    @bp.get("/v1/products/<product_id>/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True)
    def product_history(product_id: str, query: dict[str, Any]) -> Response:
        """Every change to a product (who, what, when, before/after), paged by version."""
        return history(book.products, product_id, query)

    @bp.patch("/v1/products/<product_id>")
    @endpoint("write", body=schemas.ProductPatch, response=schemas.ProductView)
    def update_product(product_id: str, body: dict[str, Any]) -> Response:
        """Change a product (price, tax rate, active ...)."""
        return resource(book.update_product(product_id, plain(body), metadata(), if_match()).view())


def pipeline_routes(bp: Blueprint, book: SalesBook) -> None:
    """/v1/pipelines: stages, win and loss reasons, and each pipeline's board."""

    @bp.post("/v1/pipelines")
    @endpoint("write", body=schemas.PipelineInput, response=schemas.PipelineView, status=201, idempotent=True)
    def create_pipeline(body: dict[str, Any]) -> Response:
        """Create a pipeline: ordered open stages with win probabilities (won/lost are added), and the
        reasons deals are won and lost for (the defaults unless given)."""
        stages = [plain(s) for s in body["stages"]]
        pipeline = book.create_pipeline({**body, "stages": stages}, metadata())
        return resource(pipeline.view(), 201, location=f"/v1/pipelines/{pipeline.id}")

    @bp.patch("/v1/pipelines/<pipeline_id>")
    @endpoint("write", body=schemas.PipelinePatch, response=schemas.PipelineView)
    def update_pipeline(pipeline_id: str, body: dict[str, Any]) -> Response:
        """Rename a pipeline or change its win and loss reasons and whether words may stand for one
        (its stages stay; closed deals keep the reasons they were given)."""
        return resource(book.update_pipeline(pipeline_id, body, metadata(), if_match()).view())

    @bp.get("/v1/pipelines")
    @endpoint("read", query=schemas.PageQuery, response=schemas.PipelineView, many=True, teams=True)
    def list_pipelines(query: dict[str, Any]) -> Response:
        """List pipelines (the default one first)."""
        docs, cursor = page(book.pipelines_view, {}, query["limit"], query.get("cursor"))
        return listing([public(d) for d in docs], cursor)

    @bp.get("/v1/pipelines/<pipeline_id>")
    @endpoint("read", query=AsOfQuery, response=schemas.PipelineView, teams=True)
    def get_pipeline(pipeline_id: str, query: dict[str, Any]) -> Response:
        """One pipeline, now or as it was at `as_of`."""
        return resource(book.pipelines.get(pipeline_id, as_of=query.get("as_of")).view())

    @bp.get("/v1/pipelines/<pipeline_id>/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True)
    def pipeline_history(pipeline_id: str, query: dict[str, Any]) -> Response:
        """Every change to a pipeline (who, what, when, before/after), paged by version."""
        return history(book.pipelines, pipeline_id, query)

    @bp.get("/v1/pipelines/<pipeline_id>/board")
    @endpoint("read", query=schemas.BoardQuery, response=schemas.BoardView, teams=True)
    def board(pipeline_id: str, query: dict[str, Any]) -> Response:
        """The Kanban board: a column per stage with its deals, count and sums per currency."""
        return jsonify(jsonable(reports_board(book, pipeline_id, query)))


def deal_routes(bp: Blueprint, book: SalesBook) -> None:
    """/v1/deals: a deal's record and its way through the stages to won or lost (team-scoped)."""

    @bp.post("/v1/deals")
    @endpoint("write", body=schemas.DealInput, response=schemas.DealView, status=201, idempotent=True, teams=True)
    def create_deal(body: dict[str, Any]) -> Response:
        """Create a deal for an existing contact (checked with contacts over gRPC)."""
        deal = book.create_deal(plain(teams.claim_for_create(body)), metadata())
        return resource(book.deal_view(deal), 201, location=f"/v1/deals/{deal.id}")

    @bp.get("/v1/deals")
    @endpoint("read", query=schemas.DealListQuery, response=schemas.DealView, many=True, teams=True)
    def list_deals(query: dict[str, Any]) -> Response:
        """List deals with their contact's name (filters: pipeline_id, stage, status, owner, team, contact_id)."""
        confined = teams.list_filters(query, query.get("team"))
        if confined is None:
            return listing([], None)
        docs, cursor = book.list_deals(confined)
        return listing([public(d) for d in docs], cursor)

    @bp.get("/v1/deals/<deal_id>")
    @endpoint("read", query=AsOfQuery, response=schemas.DealView, teams=True)
    def get_deal(deal_id: str, query: dict[str, Any]) -> Response:
        """One deal, with its stage history and the time spent in each stage; now or as it was at `as_of`."""
        confine(book.deals, deal_id)
        return resource(deal_as_of(book, deal_id, query.get("as_of")))

    @bp.get("/v1/deals/<deal_id>/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True, teams=True)
    def deal_history(deal_id: str, query: dict[str, Any]) -> Response:
        """Every change to a deal (who, what, when, before/after), paged by version."""
        confine(book.deals, deal_id)
        return history(book.deals, deal_id, query)

    @bp.patch("/v1/deals/<deal_id>")
    @endpoint("write", body=schemas.DealPatch, response=schemas.DealView, teams=True)
    def update_deal(deal_id: str, body: dict[str, Any]) -> Response:
        """Change a deal's title, amount, currency, owner, team, company or expected close."""
        confine(book.deals, deal_id)
        teams.check_change(body)
        return resource(book.deal_view(book.update_deal(deal_id, plain(body), metadata(), if_match())))

    @bp.post("/v1/deals/<deal_id>/stage")
    @endpoint("write", body=schemas.StageMove, response=schemas.DealView, teams=True)
    def move_deal(deal_id: str, body: dict[str, Any]) -> Response:
        """Move an open deal to another open stage of its pipeline."""
        confine(book.deals, deal_id)
        return resource(book.deal_view(book.move_deal(deal_id, body["stage"], metadata(), if_match())))

    @bp.post("/v1/deals/<deal_id>/won")
    @endpoint("write", body=schemas.WonInput, body_optional=True, response=schemas.DealView, teams=True)
    def win_deal(deal_id: str, body: dict[str, Any]) -> Response:
        """Mark an open deal won (optional body: `reason`, one of its pipeline's win reasons, and `reason_note`)."""
        confine(book.deals, deal_id)
        deal = book.win_deal(deal_id, body.get("reason"), body.get("reason_note"), metadata(), if_match())
        return resource(book.deal_view(deal))

    @bp.post("/v1/deals/<deal_id>/lost")
    @endpoint("write", body=schemas.LostInput, response=schemas.DealView, teams=True)
    def lose_deal(deal_id: str, body: dict[str, Any]) -> Response:
        """Mark an open deal lost, with the reason (one of its pipeline's loss reasons, or words where the
        pipeline allows them) and an optional `reason_note`."""
        confine(book.deals, deal_id)
        deal = book.lose_deal(deal_id, body["reason"], body.get("reason_note"), metadata(), if_match())
        return resource(book.deal_view(deal))

    @bp.post("/v1/deals/<deal_id>/reopen")
    @endpoint("write", response=schemas.DealView, teams=True)
    def reopen_deal(deal_id: str) -> Response:
        """Reopen a won or lost deal, in the stage it closed from."""
        confine(book.deals, deal_id)
        return resource(book.deal_view(book.reopen_deal(deal_id, metadata(), if_match())))


def activity_routes(bp: Blueprint, book: SalesBook) -> None:
    """/v1/activities: calls, meetings, tasks and emails due on deals and contacts (team-scoped)."""

    @bp.post("/v1/activities")
    @endpoint(
        "write", body=schemas.ActivityInput, response=schemas.ActivityView, status=201, idempotent=True, teams=True
    )
    def schedule_activity(body: dict[str, Any]) -> Response:
        """Schedule a call, meeting, task or email with a due time, owner and linked deal/contact."""
        if body.get("deal_id"):
            visible_deal(book, body["deal_id"])
        activity = book.schedule_activity(teams.claim_for_create(body), metadata())
        return resource(activity.view(), 201, location=f"/v1/activities/{activity.id}")

    @bp.get("/v1/activities")
    @endpoint("read", query=schemas.ActivityListQuery, response=schemas.ActivityView, many=True, teams=True)
    def list_activities(query: dict[str, Any]) -> Response:
        """Activities (`owner`, `team`, `due_before`, `overdue=true` for open ones past due, ...)."""
        confined = teams.list_filters(query, query.get("team"))
        if confined is None:
            return listing([], None)
        docs, cursor = book.list_activities(confined)
        return listing([public(d) for d in docs], cursor)

    @bp.get("/v1/activities/<activity_id>")
    @endpoint("read", query=AsOfQuery, response=schemas.ActivityView, teams=True)
    def get_activity(activity_id: str, query: dict[str, Any]) -> Response:
        """One activity, now or as it was at `as_of`."""
        confine(book.activities, activity_id)
        return resource(book.activities.get(activity_id, as_of=query.get("as_of")).view())

    @bp.get("/v1/activities/<activity_id>/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True, teams=True)
    def activity_history(activity_id: str, query: dict[str, Any]) -> Response:
        """Every change to an activity (who, what, when, before/after), paged by version."""
        confine(book.activities, activity_id)
        return history(book.activities, activity_id, query)

    @bp.post("/v1/activities/<activity_id>/complete")
    @endpoint("write", body=schemas.CompleteInput, body_optional=True, response=schemas.ActivityView, teams=True)
    def complete_activity(activity_id: str, body: dict[str, Any]) -> Response:
        """Complete an activity (optional body: `outcome`)."""
        confine(book.activities, activity_id)
        return resource(book.complete_activity(activity_id, body.get("outcome"), metadata(), if_match()).view())


def quote_routes(bp: Blueprint, book: SalesBook) -> None:
    """/v1/quotes: pro-forma invoices drafted for a deal, sent, accepted or rejected."""

    @bp.post("/v1/quotes")
    @endpoint("write", body=schemas.QuoteInput, response=schemas.QuoteView, status=201, idempotent=True)
    def draft_quote(body: dict[str, Any]) -> Response:
        """Draft a quote (pro-forma invoice) for a deal; numbered Q-<year>-<sequence>."""
        quote = book.draft_quote(body, metadata())
        return resource(quote.view(), 201, location=f"/v1/quotes/{quote.id}")

    @bp.get("/v1/quotes")
    @endpoint("read", query=schemas.QuoteListQuery, response=schemas.QuoteView, many=True)
    def list_quotes(query: dict[str, Any]) -> Response:
        """Quotes (filters: deal_id, contact_id, status)."""
        docs, cursor = book.list_quotes(query)
        return listing([public(d) for d in docs], cursor)

    @bp.get("/v1/quotes/<quote_id>")
    @endpoint("read", query=schemas.QuoteQuery, response=schemas.QuoteView, openapi=schemas.QUOTE_OR_HTML)
    def get_quote(quote_id: str, query: dict[str, Any]) -> Response:
        """One quote (now, or as it was at `as_of`); `?format=html` renders the printable pro-forma invoice
        (`&locale=` to choose its language)."""
        quote = book.quotes.get(quote_id, as_of=query.get("as_of"))
        if query["format"] == "html":
            response = Response(quote_html.render(book, quote, query.get("locale")), mimetype="text/html")
            response.headers["ETag"] = f'"{quote.version}"'
            return response
        return resource(quote.view())

    @bp.get("/v1/quotes/<quote_id>/history")
    @endpoint("read", query=HistoryQuery, response=HistoryEntry, many=True)
    def quote_history(quote_id: str, query: dict[str, Any]) -> Response:
        """Every change to a quote (who, what, when, before/after), paged by version."""
        return history(book.quotes, quote_id, query)

    @bp.post("/v1/quotes/<quote_id>/send")
    @endpoint("write", response=schemas.QuoteView)
    def send_quote(quote_id: str) -> Response:
        """Issue a draft quote to the customer (QuoteIssued)."""
        return resource(book.send_quote(quote_id, metadata(), if_match()).view())

    @bp.post("/v1/quotes/<quote_id>/accept")
    @endpoint("write", body=schemas.AcceptInput, body_optional=True, response=schemas.AcceptedQuoteView)
    def accept_quote(quote_id: str, body: dict[str, Any]) -> Response:
        """The customer accepted; by default the deal is marked won at the quote's total."""
        quote, deal = book.accept_quote(quote_id, body["mark_deal_won"], metadata(), if_match())
        return resource({**quote.view(), "deal": {"id": deal.id, "status": deal.status, "version": deal.version}})

    @bp.post("/v1/quotes/<quote_id>/reject")
    @endpoint("write", body=schemas.RejectInput, body_optional=True, response=schemas.QuoteView)
    def reject_quote(quote_id: str, body: dict[str, Any]) -> Response:
        """The customer declined (optional body: `reason`)."""
        return resource(book.reject_quote(quote_id, body.get("reason"), metadata(), if_match()).view())


def report_routes(bp: Blueprint, book: SalesBook) -> None:
    """/v1/forecast and /v1/customers/{id}/value: reports read from the projections."""

    @bp.get("/v1/forecast")
    @endpoint("read", query=schemas.RangeQuery, response=schemas.ForecastView)
    def forecast(query: dict[str, Any]) -> Response:
        """Weighted pipeline by month and owner, win rate, sales cycle and sales by lifecycle stage."""
        return jsonify(jsonable(reports.forecast(book, query["from_"], query["to"])))

    @bp.get("/v1/customers/<contact_id>/value")
    @endpoint("read", response=schemas.CustomerValueView)
    def customer_value(contact_id: str) -> Response:
        """CLV (historic and predicted), RFM scores, tier and open deals of one customer."""
        return jsonify(jsonable(reports.customer_value(book, contact_id)))


def confine(repository: Repository[Any], record_id: str) -> None:
    """A 404 for a team-scoped caller asking for another team's record (nothing to read for anyone else)."""
    if team_scope() is not None:
        teams.require_visible(repository.get(record_id).team, repository.kind.aggregate_type, record_id)


def visible_deal(book: SalesBook, deal_id: str) -> None:
    """A scoped caller links an activity only to its team's deals: another's reads as no deal (422)."""
    try:
        confine(book.deals, deal_id)
    except NotFound:
        raise ValidationFailed("1 field(s) failed validation", {"deal_id": [f"no deal with id {deal_id}"]}) from None


def history(repository: Repository[Any], record_id: str, query: dict[str, Any]) -> Response:
    """One page of a record's changes, folded from its events (404 for an id of no record of this kind)."""
    entries = changes_by_event(repository.kind, record_id, repository.history(record_id))
    return listing(*by_version(entries, query["limit"], query.get("cursor")))


def deal_as_of(book: SalesBook, deal_id: str, as_of: datetime | None) -> dict[str, Any]:
    """A deal's view now, or at `as_of`: its stage history then, the last stage's time counted up to that moment."""
    deal = book.deals.get(deal_id, as_of=as_of)
    view = book.deal_view(deal)
    if as_of is not None:
        view["stage_history"] = deal.history_view(as_of)
    return view


def reports_board(book: SalesBook, pipeline_id: str, query: dict[str, Any]) -> dict[str, Any]:
    pipeline = book.pipeline(pipeline_id)
    match: dict[str, Any] = {"pipeline_id": pipeline_id}
    if query.get("owner"):
        match["owner"] = query["owner"]
    confined = teams.list_filters(match, query.get("team"))  # None: another team's board, empty to this caller
    match = confined if confined is not None else match
    sums: dict[str, dict[str, int]] = {}
    counts: dict[str, int] = {}
    group = {"_id": "$board_key", "count": {"$sum": 1}, "total": {"$sum": "$amount_minor"}}
    rows: Iterable[dict[str, Any]]
    rows = book.deals_view.aggregate([{"$match": match}, {"$group": group}]) if confined is not None else []
    for row in rows:
        stage, currency = row["_id"].rsplit("|", 1)
        counts[stage] = counts.get(stage, 0) + row["count"]
        sums.setdefault(stage, {})[currency] = row["total"]
    columns = []
    for stage in pipeline.stages:
        docs = []
        if query["per_column"] and counts.get(stage["key"]):
            docs = list(
                book.deals_view.find({**match, "stage": stage["key"]}, {"state": 0, "stage_history": 0})
                .sort("_id", 1)
                .limit(query["per_column"])
            )
        columns.append(
            {
                "stage": stage["key"],
                "name": stage["name"],
                "probability": stage["probability"],
                "count": counts.get(stage["key"], 0),
                "sums": [
                    {"amount": money.text(money.from_minor(total, c), c), "currency": c}
                    for c, total in sorted(sums.get(stage["key"], {}).items())
                ],
                "deals": [public(d) for d in book.with_contacts(docs)],
            }
        )
    return {"pipeline_id": pipeline.id, "name": pipeline.name, "columns": columns}
