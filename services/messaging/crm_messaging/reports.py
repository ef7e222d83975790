"""Messaging reports, read from the `messages` read model (never the event store).

`consent_proofs`: how many messages went out, and how many were stopped, on which legal
basis and consent source, in a period of UTC days: the accountability view of the proofs
MessageSent / MessageSuppressed carry (docs/messaging.md, "Proof of consent").
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pymongo.collection import Collection

OUTCOMES = {"sent": True, "suppressed": False}  # the outcome a proof led to, by its `granted`


def consent_proofs(messages: Collection, start: date, end: date) -> dict[str, Any]:
    """Sends and suppressions whose consent was checked from `start` to `end` (UTC days, both
    included), by legal basis, by source and (suppressions) by reason: a few aggregations over
    the period's range of the `consent.checked_at` index, each grouping on one field (what
    every MongoDB we run on, the local stand-in included, groups alike)."""
    # checked_at is RFC 3339 text at millisecond precision in UTC (crmkit.events.rfc3339), so text
    # order is time order and a day's last instant is .999Z (no day after 9999-12-31 needed)
    period = {
        "consent.checked_at": {"$gte": f"{start.isoformat()}T00:00:00.000Z", "$lte": f"{end.isoformat()}T23:59:59.999Z"}
    }

    def counts(field: str, outcome: str) -> dict[Any, int]:
        match = {**period, "consent.granted": OUTCOMES[outcome]}
        return {
            row["_id"]: row["n"]
            for row in messages.aggregate(
                [{"$match": match}, {"$group": {"_id": f"$consent.{field}", "n": {"$sum": 1}}}]
            )
        }

    by_basis = {outcome: counts("legal_basis", outcome) for outcome in OUTCOMES}
    by_source = {outcome: counts("source", outcome) for outcome in OUTCOMES}
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "sent": sum(by_basis["sent"].values()),
        "suppressed": sum(by_basis["suppressed"].values()),
        "by_legal_basis": _rows("legal_basis", by_basis),
        "by_source": _rows("source", by_source),
        "by_reason": [{"reason": reason, "suppressed": n} for reason, n in _ordered(counts("reason", "suppressed"))],
    }


def _rows(key: str, counts: dict[str, dict[Any, int]]) -> list[dict[str, Any]]:
    """One row per value of `key` (None: no consent was recorded), with its count per outcome."""
    values = {value for per_value in counts.values() for value in per_value}
    return [
        {key: value, **{outcome: counts[outcome].get(value, 0) for outcome in OUTCOMES}}
        for value, _ in _ordered(dict.fromkeys(values, 0))
    ]


def _ordered(counts: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """By value, None (nothing recorded) first: the same order on every call."""
    return sorted(counts.items(), key=lambda item: (item[0] is not None, item[0] or ""))
