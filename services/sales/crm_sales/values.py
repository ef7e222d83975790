"""Customer value: CLV, RFM quintiles and the strategic tier. Pure functions, no I/O.

Definitions (docs/sales.md):
- **Historic CLV**: the sum of the amounts of a customer's won deals.
- **Predicted value**: average order value × purchase frequency × expected lifespan, where
  average order value = historic CLV / won deals, purchase frequency = won deals per year
  since the first purchase (at least one year is assumed, so a single recent purchase
  counts as one a year), and expected lifespan = CRM_SALES_EXPECTED_LIFESPAN_YEARS (3).
- **RFM**: recency (days since the last won deal: more recent scores higher), frequency
  (won deals) and monetary (historic CLV), each scored 1..5 by quintile among all
  customers with a won deal: score = ceil(5 × share of customers whose value is at most
  this one's). Ties share a score; the best value always scores 5.
- **Tier**: `strategic` for the top 20% of customers by historic CLV (ceil(20% of n)
  places; a tie at the boundary is strategic too), `standard` for everybody else.
All of it is computed in the reporting currency, from won deals in that currency only.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

STRATEGIC_SHARE = Decimal("0.2")
DAYS_PER_YEAR = Decimal("365.25")


def quintiles(values: Sequence[float | int | Decimal]) -> list[int]:
    """Each value's score 1..5: ceil(5 × (how many values are ≤ it) / n)."""
    ordered = sorted(values)
    n = len(ordered)
    return [max(1, math.ceil(5 * bisect_right(ordered, value) / n)) for value in values]


def strategic(values: Sequence[int]) -> list[bool]:
    """Top 20% by value (at least one customer when any has value); ties at the cut included."""
    n = len(values)
    if n == 0:
        return []
    places = math.ceil(STRATEGIC_SHARE * n)
    ordered = sorted(values, reverse=True)
    cut = ordered[places - 1]
    return [value >= cut and value > 0 for value in values]


@dataclass(frozen=True)
class Purchases:
    """A customer's won deals in the reporting currency."""

    contact_id: str
    total_minor: int
    count: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class Value:
    contact_id: str
    clv_minor: int
    predicted_minor: int
    recency: int
    frequency: int
    monetary: int
    tier: str
    won_deals: int
    last_purchase_at: datetime


def predicted_minor(p: Purchases, now: datetime, lifespan_years: Decimal) -> int:
    if p.count == 0:
        return 0
    average = Decimal(p.total_minor) / p.count
    years = max(Decimal((now - p.first_at).total_seconds()) / 86400 / DAYS_PER_YEAR, Decimal(1))
    frequency = Decimal(p.count) / years
    return int((average * frequency * lifespan_years).to_integral_value())


def rank(customers: Sequence[Purchases], now: datetime, lifespan_years: Decimal) -> list[Value]:
    """Every customer's value, scored against all the others."""
    if not customers:
        return []
    recency = quintiles([-(now - c.last_at).total_seconds() for c in customers])
    frequency = quintiles([c.count for c in customers])
    monetary = quintiles([c.total_minor for c in customers])
    top = strategic([c.total_minor for c in customers])
    return [
        Value(
            c.contact_id,
            c.total_minor,
            predicted_minor(c, now, lifespan_years),
            r,
            f,
            m,
            "strategic" if s else "standard",
            c.count,
            c.last_at,
        )
        for c, r, f, m, s in zip(customers, recency, frequency, monetary, top, strict=True)
    ]
