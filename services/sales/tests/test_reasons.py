"""Won and lost reasons (issue 17): each pipeline's lists of reasons, a deal's close naming one
(or, where the pipeline allows, giving words), a note beside it; the reasons in the deal's view,
history, as_of, events and the performance report; bad input refused whole."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_sales.commands import SalesBook
from crm_sales.domain import LOST, WON, Deal, Pipeline
from crmkit.errors import Conflict, ValidationFailed
from crmkit.events import NewEvent, new_id, parse_time, rfc3339, utcnow
from crmkit.testing import ServiceHarness

T0, T1, T2 = "2026-01-01T00:00:00.000Z", "2026-01-03T00:00:00.000Z", "2026-01-10T00:00:00.000Z"
STRICT = {
    "win_reasons": [{"code": "price", "label": "Price"}],
    "loss_reasons": [{"code": "competitor", "label": "Chose a competitor"}, {"code": "timing", "label": "Timing"}],
    "free_text_reasons": False,
}


def a_deal(pipeline: Pipeline) -> Deal:
    return Deal.create("d1", {"title": "T", "contact_id": "c1", "amount": "100.00", "currency": "USD"}, pipeline, T0)


def strict_pipeline() -> Pipeline:
    return Pipeline.define("p1", "Strict", [{"name": "Open", "probability": "20"}], STRICT)


# --- the domain -----------------------------------------------------------------------------


def test_the_default_pipeline_offers_default_reasons_and_takes_words_too() -> None:
    pipeline = Pipeline.default()
    assert {"price", "product_fit", "relationship", "timing"} <= set(pipeline.reasons(WON))
    assert {"price", "competitor", "no_decision", "timing"} <= set(pipeline.reasons(LOST))
    assert pipeline.free_text_reasons is True
    assert pipeline.closing_reason(LOST, "competitor", None) == {
        "reason_code": "competitor",
        "reason": "Chose a competitor",
    }
    assert pipeline.closing_reason(LOST, "price too high", "20% over") == {
        "reason": "price too high",
        "reason_note": "20% over",
    }
    assert pipeline.closing_reason(WON, None, "a note alone") == {"reason_note": "a note alone"}
    assert pipeline.closing_reason(WON, None, None) == {}


def test_a_list_only_pipeline_refuses_words_and_a_lost_deal_needs_a_reason() -> None:
    pipeline = strict_pipeline()
    with pytest.raises(ValidationFailed) as refused:
        pipeline.closing_reason(LOST, "price", "a note")  # `price` is a win reason here, not a loss reason
    assert set(refused.value.errors) == {"reason"} and "competitor, timing" in refused.value.errors["reason"][0]
    with pytest.raises(ValidationFailed) as refused:
        pipeline.closing_reason(LOST, None, "only a note")
    assert refused.value.errors == {"reason": ["required"]}
    assert pipeline.closing_reason(LOST, "timing", "next year") == {
        "reason_code": "timing",
        "reason": "Timing",
        "reason_note": "next year",
    }
    unlisted = Pipeline.define(
        "p2", "No loss reasons", [{"name": "Open", "probability": "20"}], {**STRICT, "loss_reasons": []}
    )
    assert unlisted.closing_reason(LOST, "any words", None) == {"reason": "any words"}  # nothing to choose from


def test_reason_codes_are_unique_per_list_and_every_bad_list_is_named() -> None:
    twice = [{"code": "a", "label": "A"}, {"code": "a", "label": "Again"}]
    with pytest.raises(ValidationFailed) as refused:
        Pipeline.define(
            "p",
            "P",
            [{"name": "X", "probability": "1"}, {"name": "x", "probability": "2"}],
            {"win_reasons": twice, "loss_reasons": twice},
        )
    assert set(refused.value.errors) == {"stages", "win_reasons", "loss_reasons"}
    pipeline = strict_pipeline()
    with pytest.raises(ValidationFailed) as refused:
        pipeline.update({"loss_reasons": twice})
    assert set(refused.value.errors) == {"loss_reasons"} and not pipeline.pending[1:]


def test_a_pipeline_update_records_only_what_changed_and_a_pipeline_from_before_reasons_offers_the_defaults() -> None:
    pipeline = strict_pipeline()
    pipeline.update({"name": "Strict", "free_text_reasons": True})
    assert pipeline.pending[-1].type == "PipelineUpdated"
    assert pipeline.pending[-1].data == {"pipeline_id": "p1", "changes": {"free_text_reasons": True}}
    pipeline.update({"name": "Strict"})
    assert len(pipeline.pending) == 2
    old = Pipeline("old")
    old.apply_stored(
        NewEvent("PipelineCreated", {"pipeline_id": "old", "name": "Old", "stages": Pipeline.default().stages})
    )
    assert old.view()["loss_reasons"] == Pipeline.default().view()["loss_reasons"] and old.free_text_reasons
    again = Pipeline.restore({**old.view(), "win_reasons": None, "loss_reasons": None, "free_text_reasons": None})
    assert again.view() == old.view()  # a read-model document folded before reasons existed


def test_a_deal_keeps_its_reason_until_reopened_and_erasure_keeps_only_the_code() -> None:
    pipeline = Pipeline.default()
    deal = a_deal(pipeline)
    deal.win(T1, pipeline=pipeline, reason="relationship", note="Ali trusts us")
    assert (deal.won_reason, deal.won_reason_code, deal.won_reason_note) == (
        "Relationship",
        "relationship",
        "Ali trusts us",
    )
    with pytest.raises(Conflict):
        deal.lose(pipeline, T1, "competitor")
    deal.reopen(T2)
    assert deal.view()["won_reason_code"] is None and deal.view()["won_reason"] is None
    deal.lose(pipeline, T2, "competitor", "Ali went elsewhere")
    restored = Deal.restore(deal.view())
    assert restored.view() == deal.view()
    deal.erase_customer_data("c1", T2)
    view = deal.view()
    assert (view["lost_reason"], view["lost_reason_note"], view["lost_reason_code"]) == (None, None, "competitor")
    with pytest.raises(ValueError):
        a_deal(pipeline).win(T1, reason="price")  # a reason is checked against a pipeline: a caller's mistake


REASON_LISTS = st.lists(st.sampled_from(["price", "timing", "competitor", "budget"]), unique=True, max_size=4)


@given(
    codes=REASON_LISTS,
    free_text=st.booleans(),
    outcome=st.sampled_from([WON, LOST]),
    reason=st.one_of(st.none(), st.sampled_from(["price", "timing", "budget", "some words"])),
    note=st.one_of(st.none(), st.just("a note")),
)
def test_a_close_names_a_listed_code_or_words_only_where_allowed(
    codes: list[str], free_text: bool, outcome: str, reason: str | None, note: str | None
) -> None:
    """Whatever a pipeline lists and allows, a close records a listed code with its label, keeps words
    only where words are allowed, keeps the note, and is refused (naming `reason`) otherwise; the
    deal's view folds exactly what was recorded."""
    listed = [{"code": code, "label": code.title()} for code in codes]
    pipeline = Pipeline.define(
        "p",
        "P",
        [{"name": "Open", "probability": "50"}],
        {"win_reasons": listed, "loss_reasons": listed, "free_text_reasons": free_text},
    )
    deal = a_deal(pipeline)
    allowed = (
        reason in codes or (reason is not None and (free_text or not codes)) or (reason is None and outcome == WON)
    )
    try:
        if outcome == WON:
            deal.win(T1, pipeline=pipeline, reason=reason, note=note)
        else:
            deal.lose(pipeline, T1, reason, note)
    except ValidationFailed as refused:
        assert not allowed and set(refused.errors) == {"reason"}
        assert deal.status == "open" and len(deal.pending) == 1
        return
    assert allowed and deal.status == outcome
    view = deal.view()
    assert view[f"{outcome}_reason_code"] == (reason if reason in codes else None)
    assert view[f"{outcome}_reason"] == (reason.title() if reason in codes else reason)
    assert view[f"{outcome}_reason_note"] == note
    replayed = Deal("d1")
    for event in deal.pending:
        replayed.apply_stored(event)
    assert replayed.view() | {"version": 0} == view | {"version": 0}


# --- the API --------------------------------------------------------------------------------


def passed(moment: str) -> datetime:
    """`moment`, once the clock has passed it (times have millisecond precision): a change made after
    this is not in `as_of=moment`."""
    when = parse_time(moment)
    while utcnow() <= when:
        time.sleep(0.001)
    return when


def new_deal(sales: ServiceHarness, people: Any, **fields: Any) -> dict:
    contact = people.add(new_id(), first_name="Sara")
    body = {"title": "Laptops", "contact_id": contact, "amount": "1000.00", "currency": "USD", **fields}
    return sales.call("POST", "/v1/deals", body, status=201)


def test_pipelines_take_show_and_change_their_reasons(sales: ServiceHarness) -> None:
    default = sales.call("GET", "/v1/pipelines/default")
    assert (
        default["free_text_reasons"] is True
        and {"code": "no_decision", "label": "No decision"} in default["loss_reasons"]
    )
    made = sales.call(
        "POST",
        "/v1/pipelines",
        {"name": "Strict", "stages": [{"name": "Open", "probability": "20"}], **STRICT},
        status=201,
    )
    assert (made["win_reasons"], made["loss_reasons"], made["free_text_reasons"]) == (
        STRICT["win_reasons"],
        STRICT["loss_reasons"],
        False,
    )
    created = passed(made["created_at"])
    plain = sales.call(
        "POST", "/v1/pipelines", {"name": "Plain", "stages": [{"name": "Open", "probability": "20"}]}, status=201
    )
    assert plain["loss_reasons"] == default["loss_reasons"] and plain["free_text_reasons"] is True
    changed = sales.call(
        "PATCH", f"/v1/pipelines/{made['id']}", {"loss_reasons": [{"code": "budget", "label": "No budget"}]}
    )
    assert changed["loss_reasons"] == [{"code": "budget", "label": "No budget"}] and changed["version"] == 2
    assert changed["stages"] == made["stages"] and changed["free_text_reasons"] is False
    history = sales.call("GET", f"/v1/pipelines/{made['id']}/history")["items"]
    assert [e["type"] for e in history] == ["PipelineCreated", "PipelineUpdated"]
    assert history[1]["changes"]["loss_reasons"]["before"] == STRICT["loss_reasons"]
    assert (
        sales.call("GET", f"/v1/pipelines/{made['id']}", as_of=rfc3339(created))["loss_reasons"]
        == STRICT["loss_reasons"]
    )
    sales.call("PATCH", "/v1/pipelines/nope", {"name": "X"}, status=404)


def test_bad_reason_lists_are_refused_whole_naming_every_field(sales: ServiceHarness) -> None:
    before = sales.runtime.store.count()
    bad = sales.call(
        "POST",
        "/v1/pipelines",
        {
            "name": "Bad",
            "stages": [{"name": "Open", "probability": "20"}],
            "win_reasons": [{"code": "Not A Code", "label": "x"}],
            "loss_reasons": [{"code": "ok", "label": " "}, {}],
            "free_text_reasons": None,
        },
        status=422,
    )
    assert set(bad["errors"]) == {
        "win_reasons.0.code",
        "loss_reasons.0.label",
        "loss_reasons.1.code",
        "loss_reasons.1.label",
        "free_text_reasons",
    }
    bad = sales.call("PATCH", "/v1/pipelines/default", {"free_text_reasons": "yes"}, status=422)
    assert set(bad["errors"]) == {"free_text_reasons"}  # a JSON boolean, not text
    twice = [{"code": "a", "label": "A"}, {"code": "a", "label": "B"}]
    bad = sales.call(
        "POST",
        "/v1/pipelines",
        {
            "name": "Twice",
            "stages": [{"name": "Open", "probability": "20"}],
            "win_reasons": twice,
            "loss_reasons": twice,
        },
        status=422,
    )
    assert set(bad["errors"]) == {"win_reasons", "loss_reasons"}
    bad = sales.call("PATCH", "/v1/pipelines/default", {"win_reasons": twice, "name": ""}, status=422)
    assert set(bad["errors"]) == {"name"}  # the schema's errors first; the lists' uniqueness is the domain's
    bad = sales.call("PATCH", "/v1/pipelines/default", {"win_reasons": twice}, status=422)
    assert set(bad["errors"]) == {"win_reasons"}
    too_many = [{"code": f"r{i}", "label": f"R{i}"} for i in range(31)]
    bad = sales.call("PATCH", "/v1/pipelines/default", {"loss_reasons": too_many}, status=422)
    assert set(bad["errors"]) == {"loss_reasons"}
    assert sales.runtime.store.count() == before


def test_won_and_lost_take_a_reason_and_a_note_and_the_old_lost_body_still_works(
    sales: ServiceHarness, people: Any
) -> None:
    won = new_deal(sales, people)
    shown = sales.call("POST", f"/v1/deals/{won['id']}/won", {"reason": "relationship", "reason_note": "trust"})
    assert (shown["status"], shown["won_reason_code"], shown["won_reason"], shown["won_reason_note"]) == (
        "won",
        "relationship",
        "Relationship",
        "trust",
    )
    plain = new_deal(sales, people)
    assert sales.call("POST", f"/v1/deals/{plain['id']}/won")["won_reason_code"] is None  # no body, as before
    legacy = new_deal(sales, people)
    lost = sales.call("POST", f"/v1/deals/{legacy['id']}/lost", {"reason": "price too high"})
    assert (lost["lost_reason"], lost["lost_reason_code"], lost["lost_reason_note"]) == ("price too high", None, None)
    coded = new_deal(sales, people)
    lost = sales.call("POST", f"/v1/deals/{coded['id']}/lost", {"reason": "competitor", "reason_note": "bundle"})
    assert (lost["lost_reason"], lost["lost_reason_code"], lost["lost_reason_note"]) == (
        "Chose a competitor",
        "competitor",
        "bundle",
    )
    events = {e.type: e.data for e in sales.runtime.store.load(won["id"]) + sales.runtime.store.load(coded["id"])}
    assert {k: events["DealWon"].get(k) for k in ("reason_code", "reason", "reason_note")} == {
        "reason_code": "relationship",
        "reason": "Relationship",
        "reason_note": "trust",
    }
    assert {k: events["DealLost"][k] for k in ("reason_code", "reason", "reason_note")} == {
        "reason_code": "competitor",
        "reason": "Chose a competitor",
        "reason_note": "bundle",
    }
    sales.project()
    response = sales.client.get(
        "/v1/deals", query_string={"status": "lost", "contact_id": coded["contact_id"]}, headers=sales.headers()
    )
    listed = response.get_json()["items"]
    assert [d["lost_reason_code"] for d in listed] == ["competitor"]


def test_bad_reasons_are_422s_naming_the_field_and_store_nothing(sales: ServiceHarness, people: Any) -> None:
    pipeline = sales.call(
        "POST",
        "/v1/pipelines",
        {"name": "Strict", "stages": [{"name": "Open", "probability": "20"}], **STRICT},
        status=201,
    )
    deal = new_deal(sales, people, pipeline_id=pipeline["id"])
    before = sales.runtime.store.count()
    path = f"/v1/deals/{deal['id']}"
    refused = sales.call("POST", f"{path}/lost", {"reason": "price too high"}, status=422)
    assert set(refused["errors"]) == {"reason"} and "competitor, timing" in refused["errors"]["reason"][0]
    assert set(sales.call("POST", f"{path}/won", {"reason": "relationship"}, status=422)["errors"]) == {"reason"}
    refused = sales.call("POST", f"{path}/lost", {"reason": "", "reason_note": "x" * 1001, "extra": 1}, status=422)
    assert set(refused["errors"]) == {"reason", "reason_note", "extra"}
    refused = sales.call("POST", f"{path}/won", {"reason": None, "reason_note": "x" * 1001}, status=422)
    assert set(refused["errors"]) == {"reason", "reason_note"}
    assert set(sales.call("POST", f"{path}/lost", {"reason_note": "words alone"}, status=422)["errors"]) == {"reason"}
    assert sales.runtime.store.count() == before
    assert sales.call("GET", path)["status"] == "open"
    lost = sales.call("POST", f"{path}/lost", {"reason": "timing", "reason_note": "next budget year"})
    assert (lost["lost_reason_code"], lost["lost_reason_note"]) == ("timing", "next budget year")
    assert sales.call("POST", f"{path}/won", {"reason": "price"}, status=409)["status"] == 409


def test_the_reasons_are_in_the_deals_history_and_as_of(sales: ServiceHarness, people: Any) -> None:
    deal = new_deal(sales, people)
    path = f"/v1/deals/{deal['id']}"
    lost = sales.call("POST", f"{path}/lost", {"reason": "no_decision", "reason_note": "stalled"})
    moment = passed(lost["updated_at"])
    sales.call("POST", f"{path}/reopen")
    sales.call("POST", f"{path}/won", {"reason": "timing"})
    history = sales.call("GET", f"{path}/history")["items"]
    assert [e["type"] for e in history][-3:] == ["DealLost", "DealReopened", "DealWon"]
    assert history[-3]["changes"]["lost_reason_code"] == {"before": None, "after": "no_decision"}
    assert history[-2]["changes"]["lost_reason_note"] == {"before": "stalled", "after": None}
    assert history[-1]["changes"]["won_reason"] == {"before": None, "after": "Timing"}
    then = sales.call("GET", path, as_of=rfc3339(moment))
    assert (then["status"], then["lost_reason_code"], then["won_reason_code"]) == ("lost", "no_decision", None)


def test_the_performance_report_counts_and_sums_by_reason_pipeline_and_owner(
    sales: ServiceHarness, people: Any
) -> None:
    other = sales.call(
        "POST",
        "/v1/pipelines",
        {
            "name": "Renewals",
            "stages": [{"name": "Due", "probability": "50"}],
            "loss_reasons": [{"code": "price", "label": "Too dear"}],
        },
        status=201,
    )
    closes = [  # (pipeline, owner, amount, outcome, reason)
        ("default", "ana", "100.00", "won", "price"),
        ("default", "ana", "50.00", "won", "price"),
        ("default", "bo", "30.00", "won", "price"),
        ("default", "bo", "7.00", "won", None),
        ("default", "ana", "200.00", "lost", "competitor"),
        ("default", None, "20.00", "lost", "Ali moved"),
        (other["id"], "ana", "400.00", "lost", "price"),
    ]
    for pipeline_id, owner, amount, outcome, reason in closes:
        deal = new_deal(sales, people, pipeline_id=pipeline_id, owner=owner, amount=amount)
        sales.call("POST", f"/v1/deals/{deal['id']}/{outcome}", {"reason": reason} if reason else None)
    sales.project()
    # the pipelines view is folded from another partition and may lag the deals view: labels do not wait for it
    sales.runtime.db["pipelines"].delete_many({})
    today = utcnow().date()
    report = sales.call(
        "GET",
        "/v1/forecast",
        **{"from": today.replace(day=1).isoformat(), "to": (today + timedelta(days=1)).isoformat()},
    )
    assert report["won_deals"] == 4 and report["lost_deals"] == 3
    usd = lambda amount: [{"amount": amount, "currency": "USD"}]  # noqa: E731
    assert report["win_reasons"] == [
        {
            "pipeline_id": "default",
            "reason": None,
            "label": None,
            "deals": 1,
            "amounts": usd("7.00"),
            "by_owner": [{"owner": "bo", "deals": 1, "amounts": usd("7.00")}],
        },
        {
            "pipeline_id": "default",
            "reason": "price",
            "label": "Price",
            "deals": 3,
            "amounts": usd("180.00"),
            "by_owner": [
                {"owner": "ana", "deals": 2, "amounts": usd("150.00")},
                {"owner": "bo", "deals": 1, "amounts": usd("30.00")},
            ],
        },
    ]
    loss = {(row["pipeline_id"], row["reason"]): row for row in report["loss_reasons"]}
    assert set(loss) == {("default", None), ("default", "competitor"), (other["id"], "price")}
    assert loss[(other["id"], "price")]["label"] == "Too dear" and loss[(other["id"], "price")]["deals"] == 1
    assert loss[("default", "competitor")]["amounts"] == usd("200.00")
    assert loss[("default", None)]["by_owner"] == [{"owner": "unassigned", "deals": 1, "amounts": usd("20.00")}]


def test_erasing_the_contact_drops_the_words_and_keeps_the_codes_for_reports(
    sales: ServiceHarness, people: Any
) -> None:
    deal = new_deal(sales, people)
    sales.call("POST", f"/v1/deals/{deal['id']}/lost", {"reason": "competitor", "reason_note": "Sara's cousin"})
    SalesBook(sales.runtime).erase_contact(deal["contact_id"])
    shown = sales.call("GET", f"/v1/deals/{deal['id']}")
    assert (shown["lost_reason"], shown["lost_reason_note"], shown["lost_reason_code"]) == (None, None, "competitor")
    lost = next(e for e in sales.runtime.store.load(deal["id"]) if e.type == "DealLost")
    assert lost.data["reason_code"] == "competitor" and lost.data["reason_note"] is None  # its key is destroyed
