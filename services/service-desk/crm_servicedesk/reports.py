"""SLA and satisfaction reports, computed from the tickets read model.

Definitions (docs/service-desk.md):
- SLA compliance per target and priority: met / (met + breached) of the tickets whose
  target has an outcome (first response given, ticket solved, or breach recorded).
- First-response and resolution times: business minutes (the ticket's policy calendar,
  pauses excluded), average and 90th percentile (nearest rank).
- CSAT: average of 1–5 ratings, the distribution, and the share of 4s and 5s.
- NPS: % promoters (9–10) − % detractors (0–6), from -100 to 100.
- SERVQUAL: the mean of each dimension (1–7) over the ratings that scored it.
- Complaint rate: complaint tickets per 100 customers who opened a ticket in the period.
- Breaches: those that happened in [from, to), by their recorded breach time (the due
  time, however late a sweep or a recompute found them; tickets opened at any time),
  counted per target and per UTC day, the first 100 listed.
Filters: `from`/`to` (ticket opened in [from, to); breaches: breached in it), `team` (the
ticket's group) and `customer_tier` (the customer's tier when the ticket was opened).
- SERVQUAL survey gaps (`servqual_report`): see its section below.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection

from crm_servicedesk.domain import PRIORITIES, SERVQUAL
from crm_servicedesk.servqual import DIMENSIONS, STANDARD_ITEMS
from crmkit.events import epoch_ms

TARGET_NAMES = ("first_response", "next_response", "resolution")
LISTED_BREACHES = 100


def _query(filters: dict[str, Any]) -> dict[str, Any]:
    query: dict[str, Any] = {}
    span: dict[str, int] = {}
    if filters.get("from_"):
        span["$gte"] = epoch_ms(filters["from_"])
    if filters.get("to"):
        span["$lt"] = epoch_ms(filters["to"])
    if span:
        query["opened_ms"] = span
    if filters.get("team"):
        query["group"] = filters["team"]
    if filters.get("customer_tier"):
        query["customer_tier"] = filters["customer_tier"]
    return query


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def _stats(values: Iterable[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {
        "count": len(present),
        "average_minutes": round(sum(present) / len(present), 2) if present else None,
        "p90_minutes": _p90(present),
    }


def _period(filters: dict[str, Any]) -> dict[str, Any]:
    return {
        "from": filters.get("from_"),
        "to": filters.get("to"),
        "team": filters.get("team"),
        "customer_tier": filters.get("customer_tier"),
    }


def sla_report(tickets: Collection, filters: dict[str, Any]) -> dict[str, Any]:
    docs = list(
        tickets.find(
            _query(filters),
            {"priority": 1, "sla_outcomes": 1, "first_response_minutes": 1, "resolution_minutes": 1, "has_policy": 1},
        )
    )
    compliance: dict[str, dict[str, Any]] = {}
    for target in TARGET_NAMES:
        per_priority = {}
        for priority in (*PRIORITIES, "all"):
            outcomes = [
                d["sla_outcomes"].get(target)
                for d in docs
                if d.get("has_policy") and (priority == "all" or d["priority"] == priority)
            ]
            met, breached = outcomes.count("met"), outcomes.count("breached")
            per_priority[priority] = {
                "met": met,
                "breached": breached,
                "compliance_percent": round(100 * met / (met + breached), 2) if met + breached else None,
            }
        compliance[target] = per_priority
    return {
        **_period(filters),
        "tickets": len(docs),
        "compliance": compliance,
        "first_response": _stats(d.get("first_response_minutes") for d in docs),
        "resolution": _stats(d.get("resolution_minutes") for d in docs),
        "breaches": breaches(tickets, filters),
        "unit": "business minutes",
    }


def breaches(tickets: Collection, filters: dict[str, Any]) -> dict[str, Any]:
    """The breaches whose breach time is in [from, to), whenever their tickets were opened."""
    start = epoch_ms(filters["from_"]) if filters.get("from_") else None
    end = epoch_ms(filters["to"]) if filters.get("to") else None
    query = {k: v for k, v in _query(filters).items() if k != "opened_ms"}
    query["breached"] = True
    if start is not None:
        query["last_breach_ms"] = {"$gte": start}
    if end is not None:
        query["first_breach_ms"] = {"$lt": end}
    found = sorted(
        (
            _listed(doc["_id"], b)
            for doc in tickets.find(query, {"breach_list": 1})
            for b in doc.get("breach_list") or ()
            if (start is None or b["breached_ms"] >= start) and (end is None or b["breached_ms"] < end)
        ),
        key=lambda b: (b["breached_at"], b["ticket_id"], b["key"]),
    )
    by_day: dict[str, int] = {}
    for item in found:
        day = item["breached_at"][:10]  # RFC 3339 in UTC: the date comes first
        by_day[day] = by_day.get(day, 0) + 1
    return {
        "count": len(found),
        "by_target": {target: sum(1 for b in found if b["target"] == target) for target in TARGET_NAMES},
        "by_day": by_day,
        "items": found[:LISTED_BREACHES],
    }


def _listed(ticket_id: str, breach: dict[str, Any]) -> dict[str, Any]:
    return {"ticket_id": ticket_id, **{k: v for k, v in breach.items() if k != "breached_ms"}}


def satisfaction_report(tickets: Collection, filters: dict[str, Any]) -> dict[str, Any]:
    docs = list(tickets.find(_query(filters), {"csat": 1, "nps": 1, "servqual": 1, "type": 1, "contact_id": 1}))
    csat = [d["csat"] for d in docs if d.get("csat") is not None]
    nps = [d["nps"] for d in docs if d.get("nps") is not None]
    promoters = sum(1 for n in nps if n >= 9)
    detractors = sum(1 for n in nps if n <= 6)
    servqual = {}
    for dimension in SERVQUAL:
        scores = [
            d["servqual"][dimension] for d in docs if d.get("servqual") and d["servqual"].get(dimension) is not None
        ]
        servqual[dimension] = {"count": len(scores), "mean": round(sum(scores) / len(scores), 2) if scores else None}
    customers = len({d["contact_id"] for d in docs})
    complaints = sum(1 for d in docs if d.get("type") == "complaint")
    return {
        **_period(filters),
        "csat": {
            "responses": len(csat),
            "average": round(sum(csat) / len(csat), 2) if csat else None,
            "distribution": {str(score): csat.count(score) for score in range(1, 6)},
            "satisfied_percent": round(100 * sum(1 for c in csat if c >= 4) / len(csat), 2) if csat else None,
        },
        "nps": {
            "responses": len(nps),
            "promoters": promoters,
            "passives": len(nps) - promoters - detractors,
            "detractors": detractors,
            "score": round(100 * (promoters - detractors) / len(nps), 2) if nps else None,
        },
        "servqual": servqual,
        "complaints": complaints,
        "customers": customers,
        "complaint_rate_per_100_customers": round(100 * complaints / customers, 2) if customers else None,
    }


# --- SERVQUAL -------------------------------------------------------------------------------------
# Over the SERVQUAL surveys read model (`servqual_desk.SurveysView`): responses are the surveys answered in
# [from, to) (`team`: the survey's agent group; `customer_tier`: the contact's tier when it was sent).
# A dimension's figures are means over the responses that asked it of each response's own dimension means
# (expectation, perception, gap: perception − expectation); `weighted_gap` is the mean of the responses'
# overall gaps (each weighted as its survey was sent); `unweighted_gap` the mean of each response's
# dimension gaps averaged alike. Buckets over time are UTC (ISO weeks, from Monday).


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 4) if present else None


def _servqual_query(filters: dict[str, Any], time_key: str) -> dict[str, Any]:
    query: dict[str, Any] = {
        time_key: {
            "$gte": epoch_ms(filters["from_"]) if filters.get("from_") else 0,
            **({"$lt": epoch_ms(filters["to"])} if filters.get("to") else {}),
        }
    }
    if filters.get("team"):
        query["group"] = filters["team"]
    if filters.get("customer_tier"):
        query["customer_tier"] = filters["customer_tier"]
    return query


def _breakdown(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "responses": len(docs),
        "weighted_gap": _mean(d.get("overall_gap") for d in docs),
        "dimensions": {dim: _mean((d.get("dimension_gaps") or {}).get(dim) for d in docs) for dim in DIMENSIONS},
    }


def _unweighted(doc: dict[str, Any]) -> float | None:
    return _mean((doc.get("dimension_gaps") or {}).values())


def _bucket_start(moment: datetime, period: str) -> datetime:
    day = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    if period == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)


def _next_bucket(start: datetime, period: str) -> datetime:
    """The next bucket's start; past the calendar's last day, the last moment there is (the last bucket's end)."""
    try:
        if period in ("day", "week"):
            return start + timedelta(days=1 if period == "day" else 7)
        months = {"month": 1, "quarter": 3, "year": 12}[period]
        index = start.year * 12 + start.month - 1 + months
        return start.replace(year=index // 12, month=index % 12 + 1)
    except (OverflowError, ValueError):
        return datetime.max.replace(tzinfo=UTC)


def _bucket_label(start: datetime, period: str) -> str:
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return {
        "day": start.strftime("%Y-%m-%d"),
        "month": start.strftime("%Y-%m"),
        "quarter": f"{start.year}-Q{(start.month - 1) // 3 + 1}",
        "year": str(start.year),
    }.get(period, "")


def _over_time(docs: list[dict[str, Any]], filters: dict[str, Any], period: str) -> list[dict[str, Any]]:
    """One bucket per period from `from` (else the first response) to `to` (else the last), empty ones too."""
    times = [datetime.fromtimestamp(d["answered_ms"] / 1000, UTC) for d in docs]
    first = filters.get("from_") or (min(times) if times else None)
    last = (filters["to"] - timedelta(milliseconds=1)) if filters.get("to") else (max(times) if times else None)
    if first is None or last is None:
        return []
    by_start: dict[datetime, list[dict[str, Any]]] = {}
    for doc, moment in zip(docs, times, strict=True):
        by_start.setdefault(_bucket_start(moment, period), []).append(doc)
    buckets = []
    start = _bucket_start(first.astimezone(UTC), period)
    while start <= last:
        end = _next_bucket(start, period)
        buckets.append(
            {"period": _bucket_label(start, period), "start": start, "end": end, **_breakdown(by_start.get(start, []))}
        )
        if end <= start or end == datetime.max.replace(tzinfo=UTC):
            break
        start = end
    return buckets


def _grouped(docs: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for doc in docs:
        groups.setdefault(doc.get(key), []).append(doc)
    return [
        {key: name, **_breakdown(found)}
        for name, found in sorted(groups.items(), key=lambda g: (g[0] is None, g[0] or ""))
    ]


def _dimension_stats(docs: list[dict[str, Any]], dimension: str) -> dict[str, Any]:
    asked = [d for d in docs if (d.get("dimension_gaps") or {}).get(dimension) is not None]
    return {
        "responses": len(asked),
        "expectation": _mean(d["dimension_expectations"].get(dimension) for d in asked),
        "perception": _mean(d["dimension_perceptions"].get(dimension) for d in asked),
        "gap": _mean(d["dimension_gaps"][dimension] for d in asked),
    }


def _item_stats(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stats = []
    for item in STANDARD_ITEMS:
        answered = [
            d for d in docs if item.id in (d.get("expectations") or {}) and item.id in (d.get("perceptions") or {})
        ]
        if answered:
            stats.append(
                {
                    "id": item.id,
                    "dimension": item.dimension,
                    "responses": len(answered),
                    "expectation": _mean(d["expectations"][item.id] for d in answered),
                    "perception": _mean(d["perceptions"][item.id] for d in answered),
                    "gap": _mean(d["perceptions"][item.id] - d["expectations"][item.id] for d in answered),
                }
            )
    return stats


def servqual_report(surveys: Collection, filters: dict[str, Any]) -> dict[str, Any]:
    """Gaps by dimension and item, over time, by customer tier and by agent group (module comment above)."""
    period = filters.get("period") or "month"
    fields = {
        "answered_ms": 1,
        "group": 1,
        "customer_tier": 1,
        "overall_gap": 1,
        "dimension_gaps": 1,
        "dimension_expectations": 1,
        "dimension_perceptions": 1,
        "expectations": 1,
        "perceptions": 1,
    }
    docs = sorted(
        surveys.find({**_servqual_query(filters, "answered_ms"), "status": "answered"}, fields),
        key=lambda d: (d["answered_ms"], d["_id"]),
    )
    sent = list(surveys.find(_servqual_query(filters, "sent_ms"), {"status": 1}))
    answered = sum(1 for d in sent if d.get("status") == "answered")
    return {
        **_period(filters),
        "period": period,
        "surveys_sent": len(sent),
        "responses": len(docs),
        "response_rate_percent": round(100 * answered / len(sent), 2) if sent else None,
        "overall": {**_breakdown(docs), "unweighted_gap": _mean(_unweighted(d) for d in docs)},
        "dimensions": {dimension: _dimension_stats(docs, dimension) for dimension in DIMENSIONS},
        "items": _item_stats(docs),
        "over_time": _over_time(docs, filters, period),
        "by_customer_tier": _grouped(docs, "customer_tier"),
        "by_agent_group": _grouped(docs, "group"),
    }
