"""Data freshness: contacts whose details nobody has confirmed for too long are flagged stale.

The rule (decided on the Contact aggregate, `Contact.flag_stale`): an active contact whose
details were last confirmed (`verified_at`) longer ago than the threshold for its lifecycle
stage is flagged stale (`ContactBecameStale`, once, `since` = when it crossed the line) until
they are confirmed again (`ContactDetailsVerified`), which clears the flag.

What counts as a confirmation:
- the creation: details entered are taken as confirmed then (or at `verified_at` given with
  the create, for records confirmed before they were entered here, e.g. migrated ones);
- staff saying so, `POST /v1/contacts/{id}/verify` (after a call, a visit, an email exchange);
- the person, through the signed link messaging's trigger sends (`confirm_api`), correcting
  their name, email or phone on the way.
A staff edit (PATCH) does not count: changing one field says nothing about the others, and
nobody asked the person. The thresholds: `CRM_CONTACTS_STALE_AFTER_DAYS` (365), and per
lifecycle stage `CRM_CONTACTS_STALE_AFTER_DAYS_BY_STAGE` (e.g. `customer=180,subscriber=730`).

`FreshnessTimer` is a contacts worker job beside the lifecycle timers, on their interval
(`CRM_CONTACTS_LIFECYCLE_INTERVAL_SECONDS`): it reads candidates from the `contacts` read
model (`verified_ms`, integer epoch ms; one query per distinct threshold) and decides each
again on the aggregate's current state, so a stale read model cannot flag anyone twice.
Time is `crmkit.clock.now`, which tests move.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo.collection import Collection

from crm_contacts import settings
from crm_contacts.records.domain import LIFECYCLE_STAGES, Contact
from crm_contacts.records.lifecycle import apply_timer, interval_seconds
from crmkit import clock
from crmkit.events import Metadata, epoch_ms
from crmkit.periodic import PeriodicJob, log_when
from crmkit.repository import Repository
from crmkit.runtime import Runtime

log = logging.getLogger(__name__)

ACTOR = "automation:freshness"
DEFAULT_DAYS = 365.0
MAX_DAYS = 36500.0  # a century: beyond it no date arithmetic is safe, and nothing would ever be stale
DAYS_VARIABLE = "CRM_CONTACTS_STALE_AFTER_DAYS"
BY_STAGE_VARIABLE = "CRM_CONTACTS_STALE_AFTER_DAYS_BY_STAGE"
# the signed link to the confirmation page: minted by messaging (crm_messaging.triggers), checked here
LINK_PURPOSE = "confirm-details"


class BadSetting(ValueError):
    """A freshness variable that cannot be used; the message names it (the process refuses to start)."""


def _days(text: str, variable: str) -> timedelta:
    try:
        days = float(text)
    except ValueError:
        raise BadSetting(f"{variable}: {text!r} is not a number of days") from None
    if not 0 < days <= MAX_DAYS:
        raise BadSetting(f"{variable}: {text!r} must be more than 0 and at most {MAX_DAYS:.0f} days")
    return timedelta(days=days)


@dataclass(frozen=True)
class StalePolicy:
    """How long a contact's details stay current: one threshold, or one per lifecycle stage."""

    default: timedelta = timedelta(days=DEFAULT_DAYS)
    by_stage: Mapping[str, timedelta] = field(default_factory=dict)

    def after(self, stage: str) -> timedelta:
        return self.by_stage.get(stage, self.default)

    def groups(self) -> dict[timedelta, list[str]]:
        """The lifecycle stages sharing each threshold (one query each)."""
        grouped: dict[timedelta, list[str]] = {}
        for stage in LIFECYCLE_STAGES:
            grouped.setdefault(self.after(stage), []).append(stage)
        return grouped


def stale_policy(environ: Mapping[str, str]) -> StalePolicy:
    """The policy from these variables (settings.py reads them); BadSetting, naming the variable, for a bad value."""
    raw = environ.get(DAYS_VARIABLE, "").strip()
    default = _days(raw, DAYS_VARIABLE) if raw else timedelta(days=DEFAULT_DAYS)
    by_stage: dict[str, timedelta] = {}
    for item in filter(None, (part.strip() for part in environ.get(BY_STAGE_VARIABLE, "").split(","))):
        stage, sep, days = (text.strip() for text in item.partition("="))
        if not sep or stage not in LIFECYCLE_STAGES:
            raise BadSetting(
                f"{BY_STAGE_VARIABLE}: {item!r} is not <stage>=<days> with a stage of {', '.join(LIFECYCLE_STAGES)}"
            )
        by_stage[stage] = _days(days, BY_STAGE_VARIABLE)
    return StalePolicy(default, by_stage)


class FreshnessTimer:
    """The staleness rule, applied to every active contact the read model says is past its threshold."""

    def __init__(
        self,
        contacts: Repository[Contact],
        view: Collection,
        now: Callable[[], datetime] = clock.now,
        policy: Callable[[], StalePolicy] | None = None,
        batch: int = 1000,
    ) -> None:
        self.contacts = contacts
        self.view = view
        self.now = now
        self.policy = policy or (lambda: settings.current().stale)
        self.batch = batch

    def step(self, moment: datetime | None = None) -> int:
        """One pass at `moment` (default: the clock); returns how many contacts were flagged."""
        moment = moment or self.now()
        policy = self.policy()
        meta = Metadata(actor=ACTOR)
        flagged = 0
        for after, stages in policy.groups().items():
            query: dict[str, Any] = {
                "status": "active",
                "stale": False,
                "lifecycle_stage": {"$in": stages},
                "verified_ms": {"$lte": epoch_ms(moment - after)},
            }
            for doc in self.view.find(query, {"_id": 1}).limit(self.batch):
                flagged += apply_timer(
                    self.contacts, doc["_id"], lambda c: c.flag_stale(moment, policy.after(c.lifecycle_stage)), meta
                )
        return flagged

    def job(self, service: str) -> PeriodicJob:
        """The worker's job: a pass every CRM_CONTACTS_LIFECYCLE_INTERVAL_SECONDS (crmkit.periodic)."""
        return PeriodicJob(
            service,
            "freshness",
            self.step,
            interval_seconds,
            log_when("contacts flagged stale", lambda flagged: flagged),
        )


def timer(runtime: Runtime) -> FreshnessTimer:
    return FreshnessTimer(Repository(runtime.store, Contact, runtime.publish), runtime.db["contacts"])
