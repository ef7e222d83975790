"""What the SLA revision routes accept (marshmallow; also drives OpenAPI): `sla_api`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from marshmallow import ValidationError, fields, validates_schema
from marshmallow.utils import missing

from crm_servicedesk import schemas
from crm_servicedesk.domain import POLICY_FIELDS, PRIORITIES, TARGETS
from crmkit import clock

MAX_EFFECTIVE_SHIFT = timedelta(days=1830)  # how far in the past or future a revision may take effect


class PolicyRevisionInput(schemas.PolicyInput):
    """A new version of an SLA policy: any field of the policy (each given one replaces the field, so
    `targets` and `business_hours` come whole), `holidays_from`, and when it takes effect."""

    # something_changes, below, in JSON Schema: besides effective_at, some field (null counts: it clears it)
    OPENAPI = {"anyOf": [{"required": [name]} for name in (*POLICY_FIELDS, "holidays_from")]}

    effective_at = schemas.AwareDateTime(
        required=True,
        metadata={
            "description": "from when the version is in force (RFC 3339 with offset; past or future, at most "
            "1,830 days away); open tickets are recomputed against it"
        },
    )

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        """Every policy field is optional here (only what changes is sent); `effective_at` stays required."""
        if field_name != "effective_at":
            field_obj.required = False
            field_obj.load_default = missing

    @validates_schema
    def some_target(self, data: dict[str, Any], **_: Any) -> None:
        if "targets" in data:
            super().some_target(data)

    @validates_schema
    def something_changes(self, data: dict[str, Any], **_: Any) -> None:
        if not any(name in data for name in (*POLICY_FIELDS, "holidays_from")):
            raise ValidationError(f"give at least one of {', '.join((*POLICY_FIELDS, 'holidays_from'))}", "_body")

    @validates_schema
    def effective_in_range(self, data: dict[str, Any], **_: Any) -> None:
        moment = data.get("effective_at")
        if moment is not None and abs(moment - clock.now()) > MAX_EFFECTIVE_SHIFT:
            raise ValidationError("at most 1,830 days from now, either way", "effective_at")


def revision_changes(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A loaded revision as the policy stores it: the fields it replaces (dates as ISO strings, targets
    complete) and the dates `holidays_from` expanded to (added to the given or the current holidays)."""
    changes = {name: body[name] for name in POLICY_FIELDS if name in body}
    if "targets" in changes:
        changes["targets"] = {p: {t: (changes["targets"].get(p) or {}).get(t) for t in TARGETS} for p in PRIORITIES}
    if "holidays" in changes:
        changes["holidays"] = sorted({day.isoformat() for day in changes["holidays"]})
    return changes, schemas.country_holidays(body.get("holidays_from"))
