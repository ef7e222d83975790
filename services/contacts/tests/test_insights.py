"""The insight figures as pure functions: definitions by example, invariants by hypothesis."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_contacts.insights.figures import (
    Deal,
    Period,
    StageChange,
    Ticket,
    TierChange,
    Timeline,
    acquisition_vs_retention,
    churn_and_retention,
    complaint_rate,
    contacts_per_sale,
    customers_at_end,
    nps_score,
    sales_by,
    satisfaction_by_tier,
    tier_at,
    win_backs,
)
from crm_contacts.insights.projections import minor_units

P = Period(1000, 2000)


def timeline(
    cid: str, *changes: tuple[int, str], created: int = 0, removed: int | None = None, cause: str = "manual:user:ana"
) -> Timeline:
    steps, previous = [], None
    for at, stage in ((created, "lead"), *changes):
        steps.append(StageChange(at, previous, stage, cause if previous else "created"))
        previous = stage
    return Timeline(cid, created, tuple(steps), removed)


def won(deal_id: str, contact: str, amount: str, at: int, currency: str = "USD") -> Deal:
    minor, scale = minor_units(amount)
    return Deal(deal_id, contact, minor, scale, currency, "won", at - 1, at)


def test_a_period_is_half_open_and_never_empty() -> None:
    assert 1000 in P and 1999 in P and 2000 not in P and 999 not in P
    with pytest.raises(ValueError):
        Period(5, 5)


def test_stage_at_a_moment_sees_only_earlier_changes_and_existing_records() -> None:
    t = timeline("c", (500, "customer"), (1500, "churned"), created=100, removed=1800)
    assert t.stage_at(100) is None  # not yet created
    assert t.stage_at(500) == "lead" and t.stage_at(501) == "customer"
    assert t.stage_at(1501) == "churned" and t.stage_at(1800) == "churned"
    assert t.stage_at(1801) is None  # merged or erased


def test_churn_and_retention_count_the_customers_the_period_starts_with() -> None:
    timelines = [
        timeline("stays", (10, "customer")),
        timeline("churns", (10, "customer"), (1200, "churned")),
        timeline("back", (10, "customer"), (1100, "churned"), (1300, "customer")),
        timeline("other", (10, "customer"), (1400, "other")),
        timeline("new", (1100, "customer"), (1500, "churned")),  # not a customer at the start
        timeline("churned-before", (10, "customer"), (900, "churned")),
        timeline("erased", (10, "customer"), removed=1500),
    ]
    figures = churn_and_retention(timelines, P)
    assert figures == {
        "customers_at_start": 5,
        "churned": 2,
        "retained": 2,
        "churned_and_not_back": 1,
        "lost_otherwise": 2,
        "churn_rate": 0.4,
        "retention_rate": 0.4,
    }


def test_rates_are_null_without_customers_at_the_start() -> None:
    figures = churn_and_retention([timeline("lead")], P)
    assert figures["customers_at_start"] == 0 and figures["churn_rate"] is None and figures["retention_rate"] is None


def test_win_backs_count_churned_to_customer_changes_in_the_period_by_cause() -> None:
    timelines = [
        timeline(
            "a",
            (10, "customer"),
            (1100, "churned"),
            (1200, "customer"),
            (1300, "churned"),
            (1400, "customer"),
            cause="automation:rule:win-back",
        ),
        timeline("b", (10, "customer"), (500, "churned"), (1500, "evangelist")),
        timeline("c", (10, "customer"), (500, "churned"), (2500, "customer")),  # after the period
        timeline("d", (10, "churned"), (1500, "lead")),  # not back to a customer stage
    ]
    assert win_backs(timelines, P) == {
        "win_backs": 3,
        "contacts_won_back": 2,
        "by_cause": {"automation:rule:win-back": 2, "manual:user:ana": 1},
    }


def test_acquisition_splits_won_revenue_into_new_and_returning_customers_per_currency() -> None:
    deals = [
        won("d1", "old", "100.00", 500),  # before the period: makes "old" a returning customer
        won("d2", "old", "40.50", 1100),
        won("d3", "new", "10.00", 1200),
        won("d4", "new", "5.25", 1300),  # the new customer's second deal is still acquisition revenue
        won("d5", "new", "1000", 1400, "IRR"),
        won("d6", "later", "7.00", 2500),  # after the period
    ]
    figures = acquisition_vs_retention(deals, P)
    assert figures["new_customers"] == 1 and figures["returning_customers"] == 1
    assert figures["deals_won_new"] == 3 and figures["deals_won_returning"] == 1
    assert figures["by_currency"] == {
        "IRR": {"new_customer_revenue": "1000", "returning_customer_revenue": "0", "total_revenue": "1000"},
        "USD": {"new_customer_revenue": "15.25", "returning_customer_revenue": "40.50", "total_revenue": "55.75"},
    }


def test_a_first_win_at_the_first_moment_of_the_period_is_new() -> None:
    figures = acquisition_vs_retention([won("d", "c", "1.00", 1000)], P)
    assert figures["new_customers"] == 1


def test_contacts_per_sale() -> None:
    timelines = [timeline(f"c{i}", created=1000 + i) for i in range(5)] + [timeline("old", created=10)]
    deals = [won("d1", "c0", "1.00", 1500), won("d2", "c1", "1.00", 1600), won("d3", "c1", "1.00", 500)]
    assert contacts_per_sale(timelines, deals, P) == {"contacts_created": 5, "deals_won": 2, "contacts_per_sale": 2.5}
    assert contacts_per_sale(timelines, [], P)["contacts_per_sale"] is None


def test_sales_by_groups_won_deals_and_never_adds_currencies() -> None:
    deals = [
        won("d1", "a", "1.00", 1100),
        won("d2", "b", "2.00", 1200, "EUR"),
        won("d3", "a", "3.10", 1300),
        won("d4", "c", "9.00", 10),
    ]
    groups = sales_by(deals, P, lambda cid: "customer" if cid == "a" else "lead")
    assert groups == {
        "customer": {"deals_won": 2, "customers": 1, "revenue": {"USD": "4.10"}},
        "lead": {"deals_won": 1, "customers": 1, "revenue": {"EUR": "2.00"}},
    }


def test_complaint_rate_per_100_customers() -> None:
    timelines = [timeline("a", (10, "customer")), timeline("b", (1500, "customer")), timeline("lead")]
    deals = [won("d", "buyer", "1.00", 1900)]
    customers = customers_at_end(timelines, deals, P)
    assert customers == {"a", "b", "buyer"}
    tickets = [
        Ticket("t1", "a", "complaint", 1100),
        Ticket("t2", "lead", "complaint", 1200),
        Ticket("t3", "a", "question", 1300),
        Ticket("t4", "a", "complaint", 2100),
    ]
    assert complaint_rate(tickets, customers, P) == {
        "complaints": 2,
        "complaints_from_customers": 1,
        "tickets_opened": 3,
        "customers": 3,
        "complaints_per_100_customers": 66.67,
        "complaint_share_of_tickets": 0.6667,
    }
    assert complaint_rate(tickets, set(), P)["complaints_per_100_customers"] is None


def test_nps() -> None:
    assert nps_score([10, 9, 8, 7, 6, 0]) == {
        "responses": 6,
        "promoters": 2,
        "passives": 2,
        "detractors": 2,
        "score": 0.0,
    }
    assert nps_score([10, 10, 3])["score"] == 33.33
    assert nps_score([])["score"] is None


def test_tier_at_a_moment_falls_back_to_the_ticket_then_standard() -> None:
    history = [TierChange(1500, "standard"), TierChange(500, "strategic")]
    assert tier_at(history, 1000, None) == "strategic"
    assert tier_at(history, 1600, "strategic") == "standard"
    assert tier_at(history, 100, "strategic") == "strategic"
    assert tier_at(None, 100, None) == "standard"


def test_satisfaction_by_tier_at_the_time_of_the_rating() -> None:
    tickets = [
        Ticket("t1", "vip", "question", 900, csat=5, nps=10, rated_ms=1100),
        Ticket("t2", "vip", "question", 900, csat=3, nps=6, rated_ms=1700),  # after the downgrade
        Ticket("t3", "joe", "complaint", 900, csat=4, nps=None, rated_ms=1200),
        Ticket("t4", "joe", "complaint", 900, csat=1, nps=0, rated_ms=2200),  # outside the period
        Ticket("t5", "ann", "question", 900, csat=2, nps=9, rated_ms=1300, tier_at_open="strategic"),
    ]
    tiers = {"vip": [TierChange(100, "strategic"), TierChange(1500, "standard")]}
    figures = satisfaction_by_tier(tickets, tiers, P)
    assert figures["strategic"]["ratings"] == 2 and figures["strategic"]["csat_average"] == 3.5
    assert figures["strategic"]["nps"]["score"] == 100.0 and figures["strategic"]["csat_satisfied_percent"] == 50.0
    assert figures["standard"]["ratings"] == 2 and figures["standard"]["csat_average"] == 3.5
    assert figures["standard"]["nps"] == {
        "responses": 1,
        "promoters": 0,
        "passives": 0,
        "detractors": 1,
        "score": -100.0,
    }


def test_minor_units_keep_the_digits_of_the_amount() -> None:
    assert minor_units("1250000.00") == (125000000, 2)
    assert minor_units("7") == (7, 0) and minor_units("0.125") == (125, 3)
    assert minor_units(None) == (0, 0) and minor_units("nonsense") == (0, 0)


# --- invariants -------------------------------------------------------------------------

STAGES = st.sampled_from(["lead", "opportunity", "customer", "evangelist", "churned", "other"])


@st.composite
def timelines(draw: st.DrawFn) -> list[Timeline]:
    out = []
    for i in range(draw(st.integers(0, 12))):
        created = draw(st.integers(0, 2500))
        times = sorted(draw(st.lists(st.integers(created, 3000), max_size=6)))
        removed = draw(st.one_of(st.none(), st.integers(created, 3000)))
        out.append(timeline(f"c{i}", *((t, draw(STAGES)) for t in times), created=created, removed=removed))
    return out


@st.composite
def deals(draw: st.DrawFn) -> list[Deal]:
    out = []
    for i in range(draw(st.integers(0, 15))):
        cents = draw(st.integers(0, 10**12))
        currency = draw(st.sampled_from(["USD", "EUR", "IRR"]))
        text = str(cents) if currency == "IRR" else f"{cents // 100}.{cents % 100:02d}"
        status = draw(st.sampled_from(["won", "won", "lost", "open"]))
        minor, scale = minor_units(text)
        at = draw(st.integers(0, 3000))
        out.append(
            Deal(
                f"d{i}",
                f"c{draw(st.integers(0, 5))}",
                minor,
                scale,
                currency,
                status,
                0,
                at if status == "won" else None,
            )
        )
    return out


@st.composite
def periods(draw: st.DrawFn) -> Period:
    start = draw(st.integers(0, 2999))
    return Period(start, draw(st.integers(start + 1, 3000)))


@given(timelines(), periods())
def test_churn_and_retention_are_rates_and_the_counts_add_up(lines: list[Timeline], period: Period) -> None:
    figures = churn_and_retention(lines, period)
    for rate in (figures["churn_rate"], figures["retention_rate"]):
        assert rate is None or 0 <= rate <= 1
    assert (
        figures["retained"] + figures["churned_and_not_back"] + figures["lost_otherwise"]
        == figures["customers_at_start"]
    )
    assert figures["churned_and_not_back"] <= figures["churned"] <= figures["customers_at_start"]
    assert min(figures["lost_otherwise"], figures["retained"]) >= 0


@given(timelines(), periods())
def test_win_backs_never_exceed_changes_into_a_customer_stage(lines: list[Timeline], period: Period) -> None:
    figures = win_backs(lines, period)
    into_customer = sum(
        1 for t in lines for c in t.changes if c.at_ms in period and c.to_stage in ("customer", "evangelist")
    )
    assert figures["contacts_won_back"] <= figures["win_backs"] <= into_customer
    assert sum(figures["by_cause"].values()) == figures["win_backs"]


@given(deals(), periods())
def test_new_plus_returning_revenue_is_the_total_won_revenue_per_currency(
    all_deals: list[Deal], period: Period
) -> None:
    figures = acquisition_vs_retention(all_deals, period)
    expected: dict[str, Decimal] = {}
    for deal in all_deals:
        if deal.won_in(period):
            expected[deal.currency] = expected.get(deal.currency, Decimal(0)) + deal.amount
    assert set(figures["by_currency"]) == set(expected)
    for currency, split in figures["by_currency"].items():
        new, returning = Decimal(split["new_customer_revenue"]), Decimal(split["returning_customer_revenue"])
        assert new + returning == Decimal(split["total_revenue"]) == expected[currency]
    assert figures["deals_won_new"] + figures["deals_won_returning"] == sum(1 for d in all_deals if d.won_in(period))


@given(deals(), periods())
def test_sales_groups_partition_the_won_deals(all_deals: list[Deal], period: Period) -> None:
    groups = sales_by(all_deals, period, lambda cid: str(cid)[-1:] if cid else "none")
    assert sum(g["deals_won"] for g in groups.values()) == sum(1 for d in all_deals if d.won_in(period))
