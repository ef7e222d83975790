"""SERVQUAL's arithmetic and rules, pure: gap = perception − expectation; a dimension's gap is the mean of its
items'; the overall gap weighs the dimensions; the instrument's and the answers' rules."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_servicedesk.servqual import (
    DIMENSIONS,
    ITEMS_OF,
    STANDARD_ITEMS,
    ServqualInstrument,
    ServqualPolicy,
    ServqualSurvey,
    answer_problems,
    default_items,
    instrument_problems,
    score,
)
from crmkit.errors import Conflict, ValidationFailed

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
LIKERT = st.integers(1, 7)


@st.composite
def instruments(draw: st.DrawFn) -> tuple[dict[str, list[str]], dict[str, float]]:
    """A usable instrument: some items per dimension (some dimensions not asked), weights on the asked ones."""
    items = {
        d: draw(st.lists(st.sampled_from(ITEMS_OF[d]), unique=True, max_size=len(ITEMS_OF[d]))) for d in DIMENSIONS
    }
    if not any(items.values()):
        items["reliability"] = ["q5"]
    asked = [d for d in DIMENSIONS if items[d]]
    raw = {d: draw(st.integers(0, 50)) for d in asked}
    if not any(raw.values()):
        raw[asked[0]] = 1
    total = sum(raw.values())
    return items, {d: raw.get(d, 0) / total for d in DIMENSIONS}


@st.composite
def responses(draw: st.DrawFn) -> tuple[dict[str, list[str]], dict[str, float], dict[str, int], dict[str, int]]:
    items, weights = draw(instruments())
    asked = [i for d in DIMENSIONS for i in items[d]]
    expectations = {i: draw(LIKERT) for i in asked}
    perceptions = {i: draw(LIKERT) for i in asked}
    return items, weights, expectations, perceptions


def exact_overall(items, weights, expectations, perceptions) -> Fraction:
    """The definition, computed independently in exact fractions."""
    total = Fraction(0)
    for d in DIMENSIONS:
        if weights[d]:
            gaps = [Fraction(perceptions[i] - expectations[i]) for i in items[d]]
            total += Fraction(weights[d]) / Fraction(sum(weights.values())) * (sum(gaps) / len(gaps))
    return total


@settings(max_examples=200, deadline=None)
@given(responses())
def test_gaps_are_perception_minus_expectation_and_the_overall_is_the_weighted_mean(response) -> None:
    items, weights, expectations, perceptions = response
    result = score(items, weights, expectations, perceptions)
    assert result["item_gaps"] == {i: perceptions[i] - expectations[i] for i in expectations}
    for d in DIMENSIONS:
        if items[d]:
            mean = sum(perceptions[i] - expectations[i] for i in items[d]) / len(items[d])
            assert result["dimension_gaps"][d] == pytest.approx(mean, abs=1e-4)
            assert -6 <= result["dimension_gaps"][d] <= 6
        else:
            assert result["dimension_gaps"][d] is None
    assert result["overall_gap"] == pytest.approx(
        float(exact_overall(items, weights, expectations, perceptions)), abs=1e-4
    )
    weighted = [result["dimension_gaps"][d] for d in DIMENSIONS if weights[d]]
    assert min(weighted) - 1e-4 <= result["overall_gap"] <= max(weighted) + 1e-4  # a weighted mean


@settings(max_examples=100, deadline=None)
@given(responses())
def test_swapping_expectation_and_perception_negates_every_gap(response) -> None:
    items, weights, expectations, perceptions = response
    straight = score(items, weights, expectations, perceptions)
    swapped = score(items, weights, perceptions, expectations)
    assert swapped["item_gaps"] == {i: -g for i, g in straight["item_gaps"].items()}
    assert swapped["overall_gap"] == pytest.approx(-straight["overall_gap"], abs=2e-4)
    for d in DIMENSIONS:
        assert (swapped["dimension_gaps"][d] is None) == (straight["dimension_gaps"][d] is None)


@settings(max_examples=100, deadline=None)
@given(responses(), st.integers(-6, 6))
def test_raising_every_perception_by_c_raises_every_gap_by_c(response, c) -> None:
    items, weights, expectations, perceptions = response
    if not all(1 <= p + c <= 7 for p in perceptions.values()):
        return
    before = score(items, weights, expectations, perceptions)
    after = score(items, weights, expectations, {i: p + c for i, p in perceptions.items()})
    assert after["overall_gap"] == pytest.approx(before["overall_gap"] + c, abs=2e-4)


@settings(max_examples=100, deadline=None)
@given(instruments(), st.integers(1, 7))
def test_met_expectations_are_a_zero_gap_and_weights_in_percent_mean_the_same(instrument, level) -> None:
    items, weights = instrument
    asked = [i for d in DIMENSIONS for i in items[d]]
    answers = dict.fromkeys(asked, level)
    assert score(items, weights, answers, answers)["overall_gap"] == 0
    expectations = {i: 7 for i in asked}
    perceptions = {i: 1 + n % 7 for n, i in enumerate(asked)}
    percent = {d: w * 100 for d, w in weights.items()}
    assert score(items, percent, expectations, perceptions)["overall_gap"] == pytest.approx(
        score(items, weights, expectations, perceptions)["overall_gap"], abs=1e-4
    )


def test_the_standard_instrument_is_the_22_items_in_their_dimensions_in_english_and_persian() -> None:
    assert [len(ITEMS_OF[d]) for d in DIMENSIONS] == [4, 5, 4, 4, 5]
    assert [item.id for item in STANDARD_ITEMS] == [f"q{n}" for n in range(1, 23)]
    for item in STANDARD_ITEMS:
        for side in (item.expectation, item.perception):
            assert side["en"].endswith(".") and side["fa"].endswith(".")
            assert any("\u0600" <= ch <= "\u06ff" for ch in side["fa"])  # Persian script
    instrument = ServqualInstrument()
    assert instrument.view()["item_count"] == 22 and instrument.view()["standard"]
    assert instrument.weights == dict.fromkeys(DIMENSIONS, 0.2)


def test_the_instrument_refuses_weights_not_summing_to_1_or_100_and_weighted_dimensions_without_items() -> None:
    assert instrument_problems(default_items(), dict.fromkeys(DIMENSIONS, 20)) == {}
    assert instrument_problems(default_items(), dict.fromkeys(DIMENSIONS, 0.2)) == {}
    assert set(instrument_problems(default_items(), dict.fromkeys(DIMENSIONS, 10))) == {"weights"}
    items = {**default_items(), "tangibles": []}
    problems = instrument_problems(items, {"tangibles": 50, "reliability": 50})
    assert set(problems) == {"weights.tangibles"}
    assert set(instrument_problems({"tangibles": ["q5"]}, None)) == {"items.tangibles"}
    assert set(instrument_problems({d: [] for d in DIMENSIONS}, None)) == {"items"}
    instrument = ServqualInstrument()
    with pytest.raises(ValidationFailed) as refused:
        instrument.configure(items, {"tangibles": 0.5, "reliability": 0.4})
    assert set(refused.value.errors) == {"weights", "weights.tangibles"} and instrument.version == 0
    assert instrument.configure({"reliability": ["q5", "q7"], "empathy": ["q18"]}, {"reliability": 75, "empathy": 25})
    assert instrument.weights == {
        "tangibles": 0,
        "reliability": 0.75,
        "responsiveness": 0,
        "assurance": 0,
        "empathy": 0.25,
    }
    assert not instrument.configure(
        {"reliability": ["q5", "q7"], "empathy": ["q18"]}, {"reliability": 0.75, "empathy": 0.25}
    )  # the same, said in fractions


def test_a_survey_takes_every_answer_once_and_names_each_missing_or_bad_one() -> None:
    survey = ServqualSurvey.send(
        "s-1",
        "c-1",
        {
            "instrument_version": 1,
            "items": {"tangibles": ["q1"], "reliability": ["q5"], "responsiveness": [], "assurance": [], "empathy": []},
            "weights": {"tangibles": 0.25, "reliability": 0.75, "responsiveness": 0, "assurance": 0, "empathy": 0},
        },
        {"rule": "manual"},
        {},
        NOW,
    )
    with pytest.raises(ValidationFailed) as refused:
        survey.answer({"q1": 7, "q5": 9}, {"q1": True, "q18": 3}, NOW)
    assert refused.value.errors == {
        "expectations.q5": ["a whole number from 1 to 7"],
        "perceptions.q1": ["a whole number from 1 to 7"],
        "perceptions.q5": ["answer this statement (1 to 7)"],
        "perceptions.q18": ["not a statement of this survey"],
    }
    assert survey.answered_at is None and len(survey.pending) == 1
    survey.answer({"q1": 7, "q5": 6}, {"q1": 5, "q5": 6}, NOW)
    assert survey.result["dimension_gaps"]["tangibles"] == -2 and survey.result["overall_gap"] == -0.5
    with pytest.raises(Conflict):
        survey.answer({"q1": 7, "q5": 6}, {"q1": 5, "q5": 6}, NOW)
    assert answer_problems(survey.items, {"q1": 1, "q5": 1}, {"q1": 1, "q5": 1}) == {}


def test_a_policy_restarts_its_count_only_when_a_counting_rule_changes() -> None:
    policy = ServqualPolicy()
    assert policy.configure({"enabled": True, "every_nth_solved_per_contact": 3}, NOW)
    first = policy.counting_since
    assert not policy.configure({"enabled": True, "every_nth_solved_per_contact": 3}, NOW.replace(hour=10))
    assert policy.configure(
        {"enabled": True, "every_nth_solved_per_contact": 3, "quarterly_tiers": ["strategic"]}, NOW.replace(hour=11)
    )
    assert policy.counting_since == first
    assert policy.configure({"enabled": True, "every_nth_solved_per_contact": 2}, NOW.replace(hour=12))
    assert policy.counting_since == "2026-12-03T12:00:00.000Z"
