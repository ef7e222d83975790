"""Lifecycle automation rules on the Contact aggregate (pure: no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from crm_contacts.records.derived import derived_values
from crm_contacts.records.domain import AUTOMATION_PATH, LIFECYCLE_STAGES, Contact, automation_may_move
from crmkit.events import rfc3339

T0 = datetime(2026, 1, 1, tzinfo=UTC)
YEAR, QUARTER = timedelta(days=365), timedelta(days=90)


def contact(stage: str = "lead") -> Contact:
    subject = Contact.create("c1", {"first_name": "Ali", "lifecycle_stage": stage})
    subject.pending = []
    return subject


def types(subject: Contact) -> list[str]:
    return [event.type for event in subject.pending]


@given(st.sampled_from(LIFECYCLE_STAGES), st.sampled_from(LIFECYCLE_STAGES))
def test_automation_never_moves_backwards_or_out_of_a_stage_people_chose(current: str, target: str) -> None:
    if not automation_may_move(current, target):
        return
    if (current, target) in (("customer", "churned"), ("churned", "customer")):
        return  # the churn and win-back rules
    assert current in AUTOMATION_PATH and target in AUTOMATION_PATH
    assert AUTOMATION_PATH.index(target) > AUTOMATION_PATH.index(current)


@given(
    st.lists(
        st.sampled_from(
            [("opportunity", "deal-opened"), ("customer", "deal-won"), ("churned", "churn"), ("customer", "win-back")]
        ),
        max_size=12,
    ),
    st.sampled_from(("evangelist", "other")),
)
def test_a_stage_set_by_a_person_off_the_path_is_never_left_by_automation(moves: list, stage: str) -> None:
    subject = contact(stage)
    for target, rule in moves:
        subject.automate_stage(target, rule, "d1")
    assert subject.lifecycle_stage == stage and subject.pending == []


def test_the_whole_lifecycle_lead_to_win_back() -> None:
    subject = contact("lead")
    assert subject.automate_stage("opportunity", "deal-opened", "d1")
    assert not subject.automate_stage("opportunity", "deal-opened", "d2")  # not the first open deal: nothing
    subject.record_purchase("d1", rfc3339(T0))
    assert subject.lifecycle_stage == "customer" and subject.last_purchase_at == rfc3339(T0)
    cause = subject.pending[-1].data["cause"]
    assert cause == {"kind": "automation", "by": "rule:deal-won", "detail": "d1"}

    assert not subject.flag_at_risk(T0 + YEAR - timedelta(seconds=1), YEAR)
    assert subject.flag_at_risk(T0 + YEAR, YEAR)
    assert subject.at_risk and subject.at_risk_since == rfc3339(T0 + YEAR)
    assert not subject.flag_at_risk(T0 + YEAR + YEAR, YEAR)  # already flagged

    assert not subject.churn(T0 + YEAR + QUARTER - timedelta(milliseconds=1), QUARTER)
    assert subject.churn(T0 + YEAR + QUARTER, QUARTER)
    assert subject.lifecycle_stage == "churned" and not subject.at_risk and subject.at_risk_since is None

    subject.record_purchase("d1", rfc3339(T0))  # the old purchase again (a re-delivery): no win-back
    assert subject.lifecycle_stage == "churned" and subject.win_backs == 0
    subject.record_purchase("d2", rfc3339(T0 + 2 * YEAR))
    assert subject.lifecycle_stage == "customer" and subject.win_backs == 1
    assert subject.pending[-1].data["cause"]["by"] == "rule:win-back"

    restored = Contact.restore(subject.view())  # the read model continues the same fold
    assert (restored.win_backs, restored.last_purchase_at, restored.at_risk) == (1, rfc3339(T0 + 2 * YEAR), False)


def test_a_purchase_clears_the_at_risk_flag_and_repeats_record_nothing() -> None:
    subject = contact("customer")
    subject.record_purchase("d1", rfc3339(T0))
    subject.flag_at_risk(T0 + YEAR, YEAR)
    subject.pending = []
    subject.record_purchase("d2", rfc3339(T0 + YEAR + timedelta(days=1)))
    assert types(subject) == ["ContactPurchaseRecorded", "ContactAtRiskCleared"] and not subject.at_risk
    subject.pending = []
    subject.record_purchase("d2", rfc3339(T0 + YEAR + timedelta(days=1)))
    assert subject.pending == []


def test_a_customer_without_a_recorded_purchase_is_never_timed() -> None:
    subject = contact("customer")  # set by a person: no won deal known
    assert not subject.flag_at_risk(T0 + 10 * YEAR, YEAR)


def test_a_person_may_set_any_stage_including_churned_and_back() -> None:
    subject = contact("customer")
    subject.change_stage("churned", cause={"kind": "manual", "by": "user:ana"})
    subject.change_stage("lead", cause={"kind": "manual", "by": "user:ana"})
    assert subject.lifecycle_stage == "lead" and subject.win_backs == 0


def test_merge_brings_over_the_newer_purchase() -> None:
    survivor, duplicate = contact("lead"), Contact.create("c2", {"first_name": "Ali"})
    duplicate.record_purchase("d9", rfc3339(T0))
    survivor.absorb(duplicate)
    assert survivor.last_purchase_at == rfc3339(T0) and survivor.lifecycle_stage == "customer"


def test_derived_values_of_a_tier_change() -> None:
    values = derived_values(
        {
            "contact_id": "c1",
            "tier": "strategic",
            "previous_tier": "standard",
            "clv": {"amount": "1250000.50", "currency": "IRR"},
        }
    )
    assert values == {
        "tier": "strategic",
        "previous_tier": "standard",
        "strategic": True,
        "clv": 1250000.5,
        "clv_currency": "IRR",
    }
