"""Forecast, reports and customer value over the read models.

Reporting currency: CRM_SALES_REPORTING_CURRENCY (default USD). Nothing is converted:
figures are given per currency, and customer ranking (CLV, RFM, tier) uses only won
deals in the reporting currency. A business selling in several currencies sets the one
it ranks by; deals in the others still show in the per-currency totals.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pymongo import ReplaceOne

from crm_sales import money, settings, values
from crm_sales.commands import SYSTEM, SalesBook
from crm_sales.domain import DEFAULT_PIPELINE_ID, LOST, WON, Customer, Pipeline
from crmkit.events import EPOCH, epoch_ms
from crmkit.periodic import PeriodicJob

log = logging.getLogger(__name__)


def reporting_currency() -> str:
    return settings.current().reporting_currency


def lifespan_years() -> Decimal:
    return settings.current().lifespan_years


def _money(minor: int | Decimal, currency: str) -> dict[str, str]:
    units = Decimal(minor).to_integral_value() if isinstance(minor, Decimal) else minor
    return {"amount": money.text(money.from_minor(int(units), currency), currency), "currency": currency}


def _per_currency(totals: Mapping[str, Decimal | int]) -> list[dict[str, str]]:
    return [_money(total, currency) for currency, total in sorted(totals.items())]


def _month_start(day: date) -> int:
    return epoch_ms(datetime(day.year, day.month, day.day, tzinfo=UTC))


def pipelines_of(book: SalesBook, deals: list[dict[str, Any]]) -> dict[str, Pipeline]:
    """The pipelines `deals` are on, from the write model (a handful of streams), not from their
    read model: that is folded from another partition of the topic, so a deal can reach the deals
    view before its pipeline reaches the pipelines view, and a report would miss its stages and labels.
    One store query for them all."""
    return book.pipelines.get_many(sorted({deal.get("pipeline_id") or DEFAULT_PIPELINE_ID for deal in deals}))


def forecast(book: SalesBook, start: date, end: date) -> dict[str, Any]:
    """Open deals expected to close in [start, end], weighted by their stage's probability."""
    by_month: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    by_owner: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    unweighted: dict[str, int] = defaultdict(int)
    query = {"status": "open", "expected_close": {"$gte": start.isoformat(), "$lte": end.isoformat()}}
    deals = list(
        book.deals_view.find(
            query, {"pipeline_id": 1, "stage": 1, "amount_minor": 1, "currency": 1, "owner": 1, "expected_close": 1}
        )
    )
    pipelines = pipelines_of(book, deals)
    for deal in deals:
        pipeline = pipelines.get(deal.get("pipeline_id") or DEFAULT_PIPELINE_ID)
        stage = pipeline.stage(deal["stage"]) if pipeline else None
        weight = money.weighted(deal["amount_minor"], Decimal(stage["probability"]) if stage else Decimal(0))
        by_month[deal["expected_close"][:7]][deal["currency"]] += weight
        by_owner[deal.get("owner") or "unassigned"][deal["currency"]] += weight
        unweighted[deal["currency"]] += deal["amount_minor"]
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "open_deals": len(deals),
        "pipeline": _per_currency(unweighted),
        "weighted": _per_currency(_sum(by_month)),
        "by_month": [{"month": m, "weighted": _per_currency(t)} for m, t in sorted(by_month.items())],
        "by_owner": [{"owner": o, "weighted": _per_currency(t)} for o, t in sorted(by_owner.items())],
        **performance(book, start, end),
    }


def _sum(groups: dict[str, dict[str, Decimal]]) -> dict[str, Decimal]:
    total: dict[str, Decimal] = defaultdict(Decimal)
    for group in groups.values():
        for currency, amount in group.items():
            total[currency] += amount
    return total


def performance(book: SalesBook, start: date, end: date) -> dict[str, Any]:
    """Deals closed in [start, end]: win rate, average cycle, sales by lifecycle stage, and the
    deals won and lost by reason."""
    low, high = _month_start(start), _month_start(end) + 86_400_000
    closed = list(
        book.deals_view.find(
            {"closed_ms": {"$gte": low, "$lt": high}},
            {
                "status": 1,
                "opened_ms": 1,
                "closed_ms": 1,
                "amount_minor": 1,
                "currency": 1,
                "contact_id": 1,
                "pipeline_id": 1,
                "owner": 1,
                "won_reason_code": 1,
                "lost_reason_code": 1,
            },
        )
    )
    won = [d for d in closed if d["status"] == "won"]
    lost = [d for d in closed if d["status"] == "lost"]
    cycle = [(d["closed_ms"] - d["opened_ms"]) / 86_400_000 for d in won if d.get("opened_ms") is not None]
    stages = {
        cid: c.get("lifecycle_stage") or "unknown" for cid, c in book.local.find([d["contact_id"] for d in won]).items()
    }
    by_stage: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    counts: dict[str, int] = defaultdict(int)
    for deal in won:
        stage = stages.get(deal["contact_id"], "unknown")
        by_stage[stage][deal["currency"]] += deal["amount_minor"]
        counts[stage] += 1
    return {
        "won_deals": len(won),
        "lost_deals": len(lost),
        "win_rate": round(len(won) / (len(won) + len(lost)), 4) if won or lost else None,
        "average_sales_cycle_days": round(sum(cycle) / len(cycle), 2) if cycle else None,
        "won": _per_currency(_sum({"all": {c: Decimal(v) for c, v in _sum_int(won).items()}})),
        "sales_by_lifecycle_stage": [
            {"lifecycle_stage": s, "won_deals": counts[s], "won": _per_currency(t)} for s, t in sorted(by_stage.items())
        ],
        **by_reason(book, won, lost),
    }


def by_reason(book: SalesBook, won: list[dict[str, Any]], lost: list[dict[str, Any]]) -> dict[str, Any]:
    """`win_reasons` and `loss_reasons`: count and amounts per (pipeline, reason code), each split by
    owner. Codes are a pipeline's own (two pipelines may mean different things by one code); a deal
    closed without a code (no reason, or words only) counts under `reason: null`; labels are the
    pipelines' own (`pipelines_of`)."""
    labels = {
        pipeline_id: {kind: pipeline.reasons(kind) for kind in (WON, LOST)}
        for pipeline_id, pipeline in pipelines_of(book, [*won, *lost]).items()
    }
    return {"win_reasons": _reason_rows(won, WON, labels), "loss_reasons": _reason_rows(lost, LOST, labels)}


def _reason_rows(
    deals: list[dict[str, Any]], outcome: str, labels: dict[str, dict[str, dict[str, str]]]
) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for deal in deals:
        groups[(deal.get("pipeline_id") or DEFAULT_PIPELINE_ID, deal.get(f"{outcome}_reason_code"))].append(deal)
    rows = []
    for (pipeline_id, code), members in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        owners: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for deal in members:
            owners[deal.get("owner") or "unassigned"].append(deal)
        rows.append(
            {
                "pipeline_id": pipeline_id,
                "reason": code,
                "label": labels.get(pipeline_id, {}).get(outcome, {}).get(code) if code else None,
                "deals": len(members),
                "amounts": _per_currency(_sum_int(members)),
                "by_owner": [
                    {"owner": owner, "deals": len(group), "amounts": _per_currency(_sum_int(group))}
                    for owner, group in sorted(owners.items())
                ],
            }
        )
    return rows


def _sum_int(deals: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for deal in deals:
        totals[deal["currency"]] += deal["amount_minor"]
    return totals


# --- customer value ---------------------------------------------------------------------


def recompute_values(book: SalesBook) -> int:
    """Rank every customer again from the won deals; record CustomerTierChanged where a tier moved.

    Returns how many tiers changed. Runs in the worker (`value_job`); safe to run twice.
    """
    currency = reporting_currency()
    now = book.clock()
    per_contact: dict[str, dict[str, Any]] = {}
    for deal in book.deals_view.find(
        {"status": "won"}, {"contact_id": 1, "amount_minor": 1, "currency": 1, "won_ms": 1}
    ):
        entry = per_contact.setdefault(
            deal["contact_id"],
            {"by_currency": defaultdict(int), "count": 0, "first": None, "last": None, "won_deals": 0},
        )
        entry["by_currency"][deal["currency"]] += deal["amount_minor"]
        entry["won_deals"] += 1
        if deal["currency"] == currency:
            at = EPOCH.timestamp() + deal["won_ms"] / 1000
            moment = datetime.fromtimestamp(at, UTC)
            entry["count"] += 1
            entry["first"] = min(entry["first"] or moment, moment)
            entry["last"] = max(entry["last"] or moment, moment)
    ranked_input = [
        values.Purchases(cid, e["by_currency"].get(currency, 0), e["count"], e["first"], e["last"])
        for cid, e in per_contact.items()
        if e["count"]
    ]
    ranked = {v.contact_id: v for v in values.rank(ranked_input, now, lifespan_years())}
    previous = {d["_id"]: d for d in book.db["customer_values"].find({}, {"tier": 1})}
    writes, tiers = [], {}
    for cid in set(per_contact) | set(previous):
        value = ranked.get(cid)
        spent = per_contact.get(cid)
        doc: dict[str, Any] = {
            "_id": cid,
            "currency": currency,
            "clv_minor": value.clv_minor if value else 0,
            "predicted_minor": value.predicted_minor if value else 0,
            "recency": value.recency if value else 0,
            "frequency": value.frequency if value else 0,
            "monetary": value.monetary if value else 0,
            "tier": value.tier if value else "standard",
            "won_deals": spent["won_deals"] if spent else 0,
            "last_purchase_ms": epoch_ms(value.last_purchase_at) if value else None,
            "by_currency": [{"currency": c, "minor": m} for c, m in sorted(spent["by_currency"].items())]
            if spent
            else [],
            "computed_ms": epoch_ms(now),
        }
        writes.append(ReplaceOne({"_id": cid}, doc, upsert=True))
        if doc["tier"] != (previous.get(cid) or {}).get("tier", "standard"):
            tiers[cid] = (doc["tier"], money.text(money.from_minor(doc["clv_minor"], currency), currency))
    changed = _record_tiers(book, tiers, currency)
    if writes:
        book.db["customer_values"].bulk_write(writes, ordered=False)
    return changed


def _record_tiers(book: SalesBook, tiers: dict[str, tuple[str, str]], currency: str) -> int:
    """CustomerTierChanged for each contact whose tier moved: one load and one bulk append (a
    customer's first change starts its stream); one written meanwhile is decided again."""
    if not tiers:
        return 0
    moved = book.customers.change_many(
        list(tiers), lambda c: c.set_tier(*tiers[c.id], currency), SYSTEM, create=Customer
    )
    return sum(moved.values())


def customer_value(book: SalesBook, contact_id: str) -> dict[str, Any]:
    """What the customer is worth (zeros for a contact never sold to), with live open deals."""
    currency = reporting_currency()
    survivor = book.local.find([contact_id]).get(contact_id)
    cid = survivor["_id"] if survivor else contact_id
    doc = book.db["customer_values"].find_one({"_id": cid}) or {}
    open_deals = list(book.deals_view.find({"contact_id": cid, "status": "open"}, {"amount_minor": 1, "currency": 1}))
    last = doc.get("last_purchase_ms")
    return {
        "contact_id": cid,
        "reporting_currency": currency,
        "lifetime_value": _money(doc.get("clv_minor", 0), currency),
        "predicted_value": _money(doc.get("predicted_minor", 0), currency),
        "rfm": {
            "recency": doc.get("recency", 0),
            "frequency": doc.get("frequency", 0),
            "monetary": doc.get("monetary", 0),
        },
        "tier": doc.get("tier", "standard"),
        "strategic": doc.get("tier") == "strategic",
        "won_deals": doc.get("won_deals", 0),
        "lifetime_value_by_currency": [_money(x["minor"], x["currency"]) for x in doc.get("by_currency", [])],
        "last_purchase_at": datetime.fromtimestamp(last / 1000, UTC) if last is not None else None,
        "open_deals": len(open_deals),
        "open_pipeline": _money(sum(d["amount_minor"] for d in open_deals if d["currency"] == currency), currency),
        "open_pipeline_by_currency": _per_currency(_sum_int(open_deals)),
        "computed_at": datetime.fromtimestamp(doc["computed_ms"] / 1000, UTC) if doc.get("computed_ms") else None,
    }


def value_job(book: SalesBook, interval: float | None = None) -> PeriodicJob:
    """The worker's customer values: recomputed every CRM_SALES_VALUE_INTERVAL seconds (crmkit.periodic)."""
    return PeriodicJob(
        book.runtime.settings.service,
        "customer_values",
        lambda: recompute_values(book),
        interval or settings.current().value_interval,
    )


def expiry_job(book: SalesBook, interval: float | None = None) -> PeriodicJob:
    """The worker's quote expiry: every CRM_SALES_QUOTE_EXPIRY_INTERVAL seconds (crmkit.periodic)."""
    return PeriodicJob(
        book.runtime.settings.service,
        "quote_expiry",
        book.expire_quotes,
        interval or settings.current().quote_expiry_interval,
    )
