"""The deal state machine, pipelines, quotes and customer value (pure domain, no servers)."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_sales import values
from crm_sales.domain import Activity, Customer, Deal, Pipeline, Product, Quote, QuoteLine
from crmkit.errors import Conflict, ValidationFailed

T0 = "2026-01-01T00:00:00.000Z"
T1 = "2026-01-03T00:00:00.000Z"
T2 = "2026-01-10T00:00:00.000Z"


def new_deal() -> tuple[Deal, Pipeline]:
    pipeline = Pipeline.default()
    deal = Deal.create("d1", {"title": "T", "contact_id": "c1", "amount": "100.00", "currency": "USD"}, pipeline, T0)
    return deal, pipeline


def test_default_pipeline_has_the_agreed_stages() -> None:
    pipeline = Pipeline.default()
    assert [(s["key"], s["probability"]) for s in pipeline.stages] == [
        ("qualification", "10"),
        ("needs_analysis", "25"),
        ("proposal", "50"),
        ("negotiation", "75"),
        ("won", "100"),
        ("lost", "0"),
    ]


def test_custom_pipeline_rejects_duplicate_or_reserved_stages() -> None:
    with pytest.raises(ValidationFailed):
        Pipeline.define("p", "P", [{"name": "A", "probability": "1"}, {"name": "a", "probability": "2"}])
    with pytest.raises(ValidationFailed):
        Pipeline.define("p", "P", [{"key": "won", "name": "W", "probability": "1"}])


def test_deal_moves_wins_reopens_and_keeps_history() -> None:
    deal, pipeline = new_deal()
    deal.move("proposal", pipeline, T1)
    deal.win(T2)
    assert deal.status == "won" and deal.stage == "won"
    with pytest.raises(Conflict):
        deal.move("qualification", pipeline, T2)
    with pytest.raises(Conflict):
        deal.lose(pipeline, T2, "late")
    deal.reopen(T2)
    assert deal.status == "open" and deal.stage == "proposal"
    assert [p.type for p in deal.pending] == ["DealCreated", "DealStageChanged", "DealWon", "DealReopened"]
    history = deal.history_view(datetime(2026, 1, 11, tzinfo=UTC))
    assert [h["stage"] for h in history] == ["qualification", "proposal", "won", "proposal"]
    assert history[0]["seconds_in_stage"] == 2 * 86400 and history[-1]["seconds_in_stage"] == 86400


def test_lost_needs_a_reason_and_open_deals_cannot_be_reopened() -> None:
    deal, pipeline = new_deal()
    with pytest.raises(ValidationFailed):
        deal.lose(pipeline, T1, "  ")
    with pytest.raises(Conflict):
        deal.reopen(T1)
    with pytest.raises(Conflict):
        deal.move("won", pipeline, T1)  # closing goes through win/lose
    with pytest.raises(ValidationFailed):
        deal.move("nowhere", pipeline, T1)
    deal.lose(pipeline, T1, "price too high")
    assert deal.lost_reason == "price too high" and deal.lost_reason_code is None


ACTIONS = st.lists(st.sampled_from(["move", "win", "lose", "reopen"]), max_size=30)


@given(
    actions=ACTIONS,
    stages=st.lists(
        st.sampled_from(["qualification", "needs_analysis", "proposal", "negotiation"]), min_size=30, max_size=30
    ),
)
def test_state_machine_only_allows_legal_transitions(actions: list[str], stages: list[str]) -> None:
    deal, pipeline = new_deal()
    for action, stage in zip(actions, stages, strict=False):
        before = deal.status
        legal = {
            "move": before == "open",
            "win": before == "open",
            "lose": before == "open",
            "reopen": before != "open",
        }[action]
        try:
            {
                "move": lambda s=stage: deal.move(s, pipeline, T1),
                "win": lambda: deal.win(T1),
                "lose": lambda: deal.lose(pipeline, T1, "r"),
                "reopen": lambda: deal.reopen(T1),
            }[action]()
            assert legal
        except Conflict:
            assert not legal
        assert (deal.status == "open") == (deal.stage not in ("won", "lost"))
    replayed = Deal.from_events("d1", [])  # folding the recorded events gives the same state
    for event in deal.pending:
        replayed.apply_stored(event)
    assert replayed.view() | {"version": 0} == deal.view() | {"version": 0}


def test_quote_lifecycle_and_expiry() -> None:
    deal, _ = new_deal()
    line = QuoteLine("Widget", Decimal(2), Decimal("10.00"), Decimal(10), Decimal(9))
    quote = Quote.draft("q1", "Q-2026-000001", deal, [line], {"valid_until": "2026-02-01"})
    assert quote.totals == {"subtotal": "18.00", "discount": "2.00", "tax": "1.62", "total": "19.62"}
    with pytest.raises(Conflict):
        quote.accept(T1, date(2026, 1, 5))
    quote.send(T1, date(2026, 1, 5))
    assert not quote.expire(T1, date(2026, 2, 1))
    assert quote.expire(T1, date(2026, 2, 2)) and quote.status == "expired"
    with pytest.raises(Conflict):
        quote.accept(T1, date(2026, 1, 5))


def test_customer_tier_changes_only_when_it_moves() -> None:
    customer = Customer("c1")
    assert not customer.set_tier("standard", "0", "USD")
    assert customer.set_tier("strategic", "10.00", "USD")
    assert customer.pending[-1].data == {
        "contact_id": "c1",
        "tier": "strategic",
        "previous_tier": "standard",
        "clv": {"amount": "10.00", "currency": "USD"},
    }


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=200))
def test_quintiles_are_monotonic_and_in_range(numbers: list[int]) -> None:
    scores = values.quintiles(numbers)
    assert all(1 <= s <= 5 for s in scores)
    assert scores[numbers.index(max(numbers))] == 5
    for a, sa in zip(numbers, scores, strict=True):
        for b, sb in zip(numbers, scores, strict=True):
            if a <= b:
                assert sa <= sb


@given(st.integers(min_value=1, max_value=40))
def test_distinct_values_split_into_equal_quintiles(groups: int) -> None:
    scores = values.quintiles(list(range(groups * 5)))
    assert all(scores.count(s) == groups for s in range(1, 6))


@given(st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=200, unique=True))
def test_strategic_is_the_top_fifth(numbers: list[int]) -> None:
    flags = values.strategic(numbers)
    expected = -(-len(numbers) // 5)
    assert sum(flags) == expected
    assert min(n for n, f in zip(numbers, flags, strict=True) if f) >= max(
        [n for n, f in zip(numbers, flags, strict=True) if not f], default=0
    )


def test_predicted_value_formula() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    two_years_ago = now - timedelta(days=730.5)
    p = values.Purchases("c", 40000, 4, two_years_ago, now)  # 4 orders of 100.00 over two years
    assert values.predicted_minor(p, now, Decimal(3)) == 60000  # 100.00 × 2/year × 3 years
    recent = values.Purchases("c", 5000, 1, now, now)
    assert values.predicted_minor(recent, now, Decimal(3)) == 15000  # at least a year is assumed


def test_restore_from_the_view_continues_the_fold_like_the_whole_stream() -> None:
    """Projections continue a fold from the stored view: every piece of state must come back."""
    deal, pipeline = new_deal()
    deal.move("proposal", pipeline, T1)
    restored = Deal.restore(deal.view())
    for aggregate in (deal, restored):
        aggregate.lose(pipeline, T2, "price", "cheaper elsewhere")
        aggregate.reopen(T2)
    assert restored.view() == deal.view() and restored.opened_at == deal.opened_at == T0
    line = QuoteLine("Widget", Decimal(2), Decimal("9.99"), Decimal(0), Decimal(9))
    quote = Quote.draft("q1", "Q-2026-000001", deal, [line], {"valid_until": "2026-02-01"})
    product = Product.create("p1", {"sku": "W", "name": "Widget", "unit_price": "9.99", "currency": "USD"})
    activity = Activity.schedule("a1", {"type": "call", "subject": "Hi", "due_at": T1, "contact_id": "c1"})
    for aggregate in (quote, product, activity, pipeline):
        again = type(aggregate).restore(aggregate.view())
        assert again.view() == aggregate.view() and vars(again) == {**vars(aggregate), "pending": []}
    quote_again = Quote.restore(quote.view())
    quote.send(T1, date(2026, 1, 3))
    quote_again.send(T1, date(2026, 1, 3))
    assert quote_again.view() == quote.view()


def test_erasing_the_contact_drops_their_words_from_every_record_once() -> None:
    """The erased event nulls what events in plain text (written before sealing) still say,
    survives a restore from the view, and is recorded once however often erasure runs."""
    deal, pipeline = new_deal()
    deal.lose(pipeline, T1, "Ali moved abroad", "Ali said so")
    activity = Activity.schedule(
        "a1", {"type": "call", "subject": "Call Ali", "notes": "mornings", "due_at": T1, "contact_id": "c1"}
    )
    activity.complete(T1, "Ali wants a discount")
    line = QuoteLine("Setup at Ali's home", Decimal(1), Decimal("10.00"), Decimal(0), Decimal(0))
    quote = Quote.draft("q1", "Q-2026-000001", new_deal()[0], [line], {"valid_until": "2026-02-01", "notes": "Ali"})
    quote.send(T1, date(2026, 1, 3))
    quote.reject(T1, "Ali found it dear")
    for record in (deal, activity, quote):
        assert record.erase_customer_data("c1", T2)
        restored = type(record).restore(record.view())
        assert "Ali" not in str(restored.view()) and restored.customer_data_erased_at == T2
        assert not restored.erase_customer_data("c1", T2) and not restored.pending
    assert (deal.status, activity.status, quote.status) == ("lost", "completed", "rejected")
    assert quote.lines[0]["total"] == "10.00" and quote.lines[0]["description"] is None
