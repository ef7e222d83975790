"""Insight figures (churn, retention, win-backs, acquisition vs. retention, contacts per
sale, sales by segment and stage, complaint rate, satisfaction by tier): pure functions.

No I/O: the REST edge (insights.api) loads the facts from the insight read models
(insights.projections) and passes them here. Every definition is written out in
docs/insights.md; the docstrings below are the short form.

Conventions shared by every figure:
- A period is half-open, [start_ms, end_ms), in epoch milliseconds.
- "At a moment t" means after every change recorded strictly before t.
- Money is summed per currency, never across currencies, exactly (integer minor units
  → Decimal), and shown as decimal strings with the currency's minor digits.
- A rate whose denominator is zero is None (null), never 0 and never an error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

CUSTOMER_STAGES = frozenset({"customer", "evangelist"})
CHURNED = "churned"
DEFAULT_TIER = "standard"  # sales' tier for a contact it never ranked higher (crm_sales.domain.Customer)
NO_CONTACT_STAGE = "unknown"  # sales by stage: a deal whose contact the contacts service does not know
RATE_DIGITS = 4
PERCENT_DIGITS = 2


@dataclass(frozen=True)
class Period:
    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ValueError("a period ends after it starts")

    def __contains__(self, moment: object) -> bool:
        return isinstance(moment, int) and self.start_ms <= moment < self.end_ms


@dataclass(frozen=True)
class StageChange:
    at_ms: int
    from_stage: str | None  # None: the stage the contact was created in
    to_stage: str
    cause: str = "unknown"  # "automation:rule:win-back", "manual:user:ana", "merge:<id>", "created"


@dataclass(frozen=True)
class Timeline:
    """A contact's lifecycle: when it was created, each stage it entered, when it left (merge/erasure)."""

    contact_id: str
    created_ms: int
    changes: tuple[StageChange, ...]  # in time order; the first is the creation stage
    removed_ms: int | None = None  # merged into another contact or erased: not counted from then on

    def exists_at(self, moment: int) -> bool:
        return self.created_ms < moment and (self.removed_ms is None or self.removed_ms >= moment)

    def stage_at(self, moment: int) -> str | None:
        """The stage after every change strictly before `moment`; None when the record did not exist."""
        if not self.exists_at(moment):
            return None
        stage = None
        for change in self.changes:
            if change.at_ms >= moment:
                break
            stage = change.to_stage
        return stage

    def customer_at(self, moment: int) -> bool:
        return self.stage_at(moment) in CUSTOMER_STAGES


@dataclass(frozen=True)
class Deal:
    deal_id: str
    contact_id: str | None
    amount_minor: int
    scale: int  # digits after the decimal point (the currency's minor unit)
    currency: str
    status: str  # open | won | lost
    created_ms: int | None = None
    won_ms: int | None = None

    @property
    def amount(self) -> Decimal:
        return Decimal(self.amount_minor).scaleb(-self.scale)

    def won_in(self, period: Period) -> bool:
        return self.status == "won" and self.won_ms in period


@dataclass(frozen=True)
class Ticket:
    ticket_id: str
    contact_id: str | None
    type: str
    opened_ms: int | None
    csat: int | None = None
    nps: int | None = None
    rated_ms: int | None = None
    tier_at_open: str | None = None  # the tier the service desk recorded when the ticket was opened


@dataclass(frozen=True)
class TierChange:
    at_ms: int
    tier: str


# --- money and numbers ------------------------------------------------------------------


@dataclass
class Totals:
    """Exact sums per currency; the shown scale is the largest seen for that currency."""

    amounts: dict[str, Decimal] = field(default_factory=dict)
    scales: dict[str, int] = field(default_factory=dict)

    def add(self, deal: Deal) -> None:
        self.amounts[deal.currency] = self.amounts.get(deal.currency, Decimal(0)) + deal.amount
        self.scales[deal.currency] = max(self.scales.get(deal.currency, 0), deal.scale)

    def text(self) -> dict[str, str]:
        return {cur: money_text(self.amounts[cur], self.scales[cur]) for cur in sorted(self.amounts)}


def money_text(amount: Decimal, scale: int) -> str:
    return f"{amount.quantize(Decimal(1).scaleb(-scale)):f}"


def ratio(numerator: int, denominator: int, digits: int = RATE_DIGITS) -> float | None:
    if denominator == 0:
        return None
    return round(float(Fraction(numerator, denominator)), digits)


def nps_score(scores: Iterable[int]) -> dict[str, Any]:
    """Promoters score 9–10, passives 7–8, detractors 0–6; NPS = (promoters − detractors) / responses × 100."""
    values = list(scores)
    promoters = sum(1 for s in values if s >= 9)
    detractors = sum(1 for s in values if s <= 6)
    return {
        "responses": len(values),
        "promoters": promoters,
        "passives": len(values) - promoters - detractors,
        "detractors": detractors,
        "score": ratio(100 * (promoters - detractors), len(values), PERCENT_DIGITS),
    }


# --- lifecycle: churn, retention, win-backs --------------------------------------------


def churn_and_retention(timelines: Iterable[Timeline], period: Period) -> dict[str, Any]:
    """Churn and retention of the customers the period starts with.

    customers_at_start: existing at start_ms in a customer stage (customer, evangelist).
    churned: those of them that moved to `churned` at least once during the period.
    retained: those of them in a customer stage at end_ms (a churned-and-won-back one too).
    churn_rate = churned / customers_at_start; retention_rate = retained / customers_at_start.
    lost_otherwise: not retained and never churned in the period (moved to another stage,
    merged, erased). Customers won during the period are not in either rate.
    """
    start = churned = retained = churned_not_back = 0
    for timeline in timelines:
        if not timeline.customer_at(period.start_ms):
            continue
        start += 1
        did_churn = any(c.to_stage == CHURNED and c.at_ms in period for c in timeline.changes)
        kept = timeline.customer_at(period.end_ms)
        churned += did_churn
        retained += kept
        churned_not_back += did_churn and not kept
    return {
        "customers_at_start": start,
        "churned": churned,
        "retained": retained,
        "churned_and_not_back": churned_not_back,
        "lost_otherwise": start - retained - churned_not_back,
        "churn_rate": ratio(churned, start),
        "retention_rate": ratio(retained, start),
    }


def win_backs(timelines: Iterable[Timeline], period: Period) -> dict[str, Any]:
    """Stage changes churned → a customer stage during the period, by cause."""
    count = 0
    contacts = set()
    by_cause: dict[str, int] = defaultdict(int)
    for timeline in timelines:
        for change in timeline.changes:
            if change.from_stage == CHURNED and change.to_stage in CUSTOMER_STAGES and change.at_ms in period:
                count += 1
                contacts.add(timeline.contact_id)
                by_cause[change.cause] += 1
    return {"win_backs": count, "contacts_won_back": len(contacts), "by_cause": dict(sorted(by_cause.items()))}


# --- sales ------------------------------------------------------------------------------


def acquisition_vs_retention(won_deals: Iterable[Deal], period: Period) -> dict[str, Any]:
    """Won revenue of the period split into new customers' and returning customers'.

    `won_deals`: the won deals of the period, plus every earlier won deal of their contacts
    (later ones are ignored). A contact is new when its first won deal falls in the period:
    all its won revenue in the period is acquisition revenue. A contact with a won deal
    before the period is returning: its revenue in the period is retention revenue.
    Per currency: new + returning == total, always.
    """
    deals = [d for d in won_deals if d.status == "won" and d.won_ms is not None and d.won_ms < period.end_ms]
    first_won: dict[str | None, int] = {}
    for deal in deals:
        assert deal.won_ms is not None
        first_won[deal.contact_id] = min(first_won.get(deal.contact_id, deal.won_ms), deal.won_ms)
    new, returning, total = Totals(), Totals(), Totals()
    new_contacts: set[str | None] = set()
    returning_contacts: set[str | None] = set()
    new_deals = returning_deals = 0
    for deal in deals:
        if not deal.won_in(period):
            continue
        total.add(deal)
        if first_won[deal.contact_id] >= period.start_ms:
            new.add(deal)
            new_contacts.add(deal.contact_id)
            new_deals += 1
        else:
            returning.add(deal)
            returning_contacts.add(deal.contact_id)
            returning_deals += 1
    currencies = sorted(total.amounts)
    by_currency = {
        cur: {
            "new_customer_revenue": new.text().get(cur, money_text(Decimal(0), total.scales[cur])),
            "returning_customer_revenue": returning.text().get(cur, money_text(Decimal(0), total.scales[cur])),
            "total_revenue": total.text()[cur],
        }
        for cur in currencies
    }
    return {
        "new_customers": len(new_contacts),
        "returning_customers": len(returning_contacts),
        "deals_won_new": new_deals,
        "deals_won_returning": returning_deals,
        "by_currency": by_currency,
    }


def contacts_per_sale(timelines: Iterable[Timeline], won_deals: Iterable[Deal], period: Period) -> dict[str, Any]:
    """Contacts created in the period / deals won in the period (null without a won deal)."""
    created = sum(1 for t in timelines if t.created_ms in period)
    won = sum(1 for d in won_deals if d.won_in(period))
    return {"contacts_created": created, "deals_won": won, "contacts_per_sale": ratio(created, won)}


def sales_summary(won_deals: Iterable[Deal], period: Period) -> dict[str, Any]:
    """Deals won in the period: count, distinct customers, revenue per currency."""
    totals = Totals()
    count = 0
    customers: set[str | None] = set()
    for deal in won_deals:
        if deal.won_in(period):
            totals.add(deal)
            count += 1
            customers.add(deal.contact_id)
    return {"deals_won": count, "customers": len(customers), "revenue": totals.text()}


def sales_by(won_deals: Iterable[Deal], period: Period, key: Callable[[str | None], str]) -> dict[str, dict[str, Any]]:
    """`sales_summary` per group, the group of a deal being `key(contact_id)`."""
    groups: dict[str, list[Deal]] = defaultdict(list)
    for deal in won_deals:
        if deal.won_in(period):
            groups[key(deal.contact_id)].append(deal)
    return {name: sales_summary(deals, period) for name, deals in sorted(groups.items())}


# --- service ----------------------------------------------------------------------------


def customers_at_end(timelines: Iterable[Timeline], won_deals: Iterable[Deal], period: Period) -> set[str]:
    """Contacts that, at end_ms, are in a customer stage or have a deal won before then."""
    ids = {t.contact_id for t in timelines if t.customer_at(period.end_ms)}
    ids |= {
        d.contact_id
        for d in won_deals
        if d.status == "won" and d.won_ms is not None and d.won_ms < period.end_ms and d.contact_id
    }
    return ids


def complaint_rate(tickets: Iterable[Ticket], customers: set[str], period: Period) -> dict[str, Any]:
    """Complaint tickets opened in the period per 100 customers (customers: `customers_at_end`)."""
    opened = [t for t in tickets if t.opened_ms in period]
    complaints = [t for t in opened if t.type == "complaint"]
    from_customers = sum(1 for t in complaints if t.contact_id in customers)
    return {
        "complaints": len(complaints),
        "complaints_from_customers": from_customers,
        "tickets_opened": len(opened),
        "customers": len(customers),
        "complaints_per_100_customers": ratio(100 * len(complaints), len(customers), PERCENT_DIGITS),
        "complaint_share_of_tickets": ratio(len(complaints), len(opened)),
    }


def tier_at(history: list[TierChange] | None, moment: int, fallback: str | None) -> str:
    """The tier from the last CustomerTierChanged before `moment`, else `fallback`, else standard."""
    tier = None
    for change in sorted(history or [], key=lambda c: c.at_ms):
        if change.at_ms >= moment:
            break
        tier = change.tier
    return tier or fallback or DEFAULT_TIER


def satisfaction_by_tier(
    tickets: Iterable[Ticket], tiers: Mapping[str, list[TierChange]], period: Period
) -> dict[str, Any]:
    """Ratings given in the period, grouped by the customer's tier at the time of the rating.

    CSAT (1–5): average and share of 4–5 ("satisfied"); NPS (0–10) as in `nps_score`.
    """
    groups: dict[str, list[Ticket]] = defaultdict(list)
    for ticket in tickets:
        if ticket.rated_ms in period and ticket.csat is not None:
            tier = tier_at(tiers.get(ticket.contact_id or ""), ticket.rated_ms or 0, ticket.tier_at_open)
            groups[tier].append(ticket)
    out = {}
    for tier, rated in sorted(groups.items()):
        csat = [t.csat for t in rated if t.csat is not None]
        out[tier] = {
            "ratings": len(rated),
            "csat_average": round(float(Fraction(sum(csat), len(csat))), 2) if csat else None,
            "csat_satisfied_percent": ratio(100 * sum(1 for c in csat if c >= 4), len(csat), PERCENT_DIGITS),
            "nps": nps_score(t.nps for t in rated if t.nps is not None),
        }
    return out
