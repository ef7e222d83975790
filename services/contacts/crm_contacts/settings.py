"""The contacts service's own settings, every one from the environment here (README: Configuration).

Built when a process starts (`ServiceSpec.configure`: a value that cannot work stops it,
naming every bad variable) and reached through `current()` by the code that needs one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from crmkit.settings import Current, Env

if TYPE_CHECKING:
    from crm_contacts.records.freshness import StalePolicy

DEFAULT_IMPORT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_EXPORT_DEADLINE_SECONDS = 10.0  # a rare, unhurried request: a false 503 costs more than a slow answer


@dataclass(frozen=True)
class ContactsSettings:
    customer360_deadline: float  # CRM_360_DEADLINE_SECONDS: each neighbour's lookup for the 360° view
    export_deadline: float  # CRM_EXPORT_DEADLINE_SECONDS: each service's part of a subject-access export
    phone_region: str | None  # CRM_DEFAULT_PHONE_REGION: a number without `+` is read in it; None: `+` required
    import_max_bytes: int  # CRM_CONTACTS_IMPORT_MAX_BYTES: the largest POST /v1/imports body
    import_batch: int  # CRM_CONTACTS_IMPORT_BATCH: rows per import batch
    at_risk_after: timedelta  # CRM_AT_RISK_AFTER_DAYS: a customer without a won deal this long is at risk
    churn_after: timedelta  # CRM_CHURN_AFTER_DAYS: still at risk this much longer: churned
    lifecycle_interval: float  # CRM_CONTACTS_LIFECYCLE_INTERVAL_SECONDS: how often the timers run
    stale: StalePolicy  # CRM_CONTACTS_STALE_AFTER_DAYS[_BY_STAGE]: when details count as stale

    @property
    def xlsx_max_unpacked(self) -> int:
        """A workbook's XML inflates ~5-20x; a zip bomb far more."""
        return 10 * self.import_max_bytes

    @classmethod
    def read(cls, env: Env) -> ContactsSettings:
        return cls(
            customer360_deadline=env.number("CRM_360_DEADLINE_SECONDS", 1.0, above=0),
            export_deadline=env.number("CRM_EXPORT_DEADLINE_SECONDS", DEFAULT_EXPORT_DEADLINE_SECONDS, above=0),
            phone_region=env.text("CRM_DEFAULT_PHONE_REGION", "IR").strip().upper() or None,
            import_max_bytes=env.integer("CRM_CONTACTS_IMPORT_MAX_BYTES", DEFAULT_IMPORT_MAX_BYTES, minimum=1),
            import_batch=env.integer("CRM_CONTACTS_IMPORT_BATCH", 1000, minimum=1),
            at_risk_after=timedelta(days=env.number("CRM_AT_RISK_AFTER_DAYS", 365, minimum=0)),
            churn_after=timedelta(days=env.number("CRM_CHURN_AFTER_DAYS", 90, minimum=0)),
            lifecycle_interval=env.number("CRM_CONTACTS_LIFECYCLE_INTERVAL_SECONDS", 60, above=0),
            stale=_stale(env),
        )


def _stale(env: Env) -> StalePolicy:
    from crm_contacts.records import freshness  # freshness reaches these settings too: imported when first read

    names = (freshness.DAYS_VARIABLE, freshness.BY_STAGE_VARIABLE)
    try:
        return freshness.stale_policy({name: value for name in names if (value := env.raw(name)) is not None})
    except freshness.BadSetting as exc:
        variable, _, why = str(exc).partition(": ")
        env.problem(variable, why)
        return freshness.StalePolicy()


current = Current(ContactsSettings.read)
"""The settings now (built once per environment): `settings.current().import_batch`."""
