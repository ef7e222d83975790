"""Sales aggregates: pure Python, no I/O. Each decides and records events; `apply` folds them.

Money in events is a decimal string plus its currency (exactly what the API shows);
times that matter to the domain (stage entered, won, lost) travel in the event as
RFC 3339 text, passed in by the command, so folding never asks the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from crm_sales import money
from crmkit.aggregate import Aggregate
from crmkit.errors import Conflict, ValidationFailed
from crmkit.events import parse_time

DEFAULT_PIPELINE_ID = "default"
DEFAULT_STAGES = (
    ("qualification", "Qualification", "10"),
    ("needs_analysis", "Needs analysis", "25"),
    ("proposal", "Proposal", "50"),
    ("negotiation", "Negotiation", "75"),
)
WON, LOST = "won", "lost"
# Why deals are won and lost: each pipeline's choice of reasons (code, label), these unless it
# names its own. A pipeline defined before reasons existed offers these too.
REASON_CODE = r"^[a-z0-9_]{1,40}$"
DEFAULT_WIN_REASONS = (
    ("price", "Price"), ("product_fit", "Product fit"), ("relationship", "Relationship"),
    ("timing", "Timing"), ("service", "Service and support"), ("other", "Other"),
)
DEFAULT_LOSS_REASONS = (
    ("price", "Price"), ("product_fit", "Product fit"), ("competitor", "Chose a competitor"),
    ("budget", "No budget"), ("timing", "Timing"), ("no_decision", "No decision"),
    ("relationship", "Relationship"), ("other", "Other"),
)
REASON_LISTS = {WON: "win_reasons", LOST: "loss_reasons"}
PIPELINE_SETTINGS = ("name", "win_reasons", "loss_reasons", "free_text_reasons")
ACTIVITY_TYPES = ("call", "meeting", "task", "email")
TIERS = ("strategic", "standard")

# What sales writes about a person, sealed with the record's key (crmkit.shredding), which
# erasure of the record's contact destroys. Titles and reasons are free text that names
# people in practice ("Renewal for Ali Rezaei", "lost: Ali moved to a competitor").
PERSONAL_DATA = {
    "DealCreated": ("title",),
    "DealUpdated": ("changes.title",),
    "DealWon": ("reason", "reason_note"),
    "DealLost": ("reason", "reason_note"),
    "ActivityScheduled": ("subject", "notes"),
    "ActivityCompleted": ("outcome",),
    "QuoteDrafted": ("notes", "lines.description"),
    "QuoteRejected": ("reason",),
}


def _time(value: str | None) -> datetime | None:
    return parse_time(value) if value else None


def _restore(aggregate: Aggregate, view: dict[str, Any], names: tuple[str, ...]) -> None:
    """Set `names` (and the version and times) back from a `view()`: how projections continue a fold."""
    for name in (*names, "version", "created_at", "updated_at"):
        setattr(aggregate, name, view.get(name))


class ErasableRecord(Aggregate):
    """A deal, activity or quote: a record about one contact, whose words are dropped when that
    contact is erased. `<Kind>CustomerDataErased` makes every fold (read models, a rebuild, a
    load) forget the personal fields at once — also those of events stored in plain text before
    sales sealed them; the caller destroys the record's key, so the sealed copies stay unreadable."""

    erased_event = ""  # e.g. DealCustomerDataErased
    id_field = ""  # e.g. deal_id
    contact_changed_event = ""  # e.g. DealContactChanged (none for a quote)

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.customer_data_erased_at: str | None = None
        self.contact_id: str | None = None
        # the last contact change, if a merge made it: {"merge_id", "from"} (what an unmerge moves back)
        self.merge_move: dict[str, Any] | None = None

    def change_contact(self, contact_id: str, reason: str, merge_id: str | None = None) -> None:
        """Belong to another contact; `merge_id` names the contacts' ContactMerged (or, for
        `contact_unmerged`, the merge reversed) that caused it."""
        if contact_id != self.contact_id:
            self.record(self.contact_changed_event, {self.id_field: self.id, "from": self.contact_id,
                                                     "to": contact_id, "reason": reason,
                                                     **({"merge_id": merge_id} if merge_id else {})})

    def move_back(self, duplicate_id: str, survivor_id: str, merge_id: str | None) -> bool:
        """An unmerge: go back to `duplicate_id` if the merge `merge_id` moved this record here and
        nothing moved it since (a person's reassignment stays). A merge recorded before merges were
        named counts when it moved this record from the duplicate to the survivor."""
        move = self.merge_move
        if (move is None or self.contact_id != survivor_id or move["from"] != duplicate_id
                or move["merge_id"] not in (merge_id, None)):
            return False
        self.change_contact(duplicate_id, "contact_unmerged", merge_id)
        return True

    def _contact_changed(self, data: dict[str, Any]) -> None:
        self.contact_id = data["to"]
        by_merge = data.get("reason") == "contact_merged"
        self.merge_move = {"merge_id": data.get("merge_id"), "from": data["from"]} if by_merge else None

    def erase_customer_data(self, contact_id: str, at: str) -> bool:
        """Record the erasure once; a repeat (the same person's merged records, a redelivery) records nothing."""
        if self.customer_data_erased_at is not None:
            return False
        self.record(self.erased_event, {self.id_field: self.id, "contact_id": contact_id, "at": at})
        return True


# --- products -----------------------------------------------------------------------------


class Product(Aggregate):
    aggregate_type = "product"
    FIELDS = ("sku", "name", "description", "unit_price", "currency", "tax_rate", "active")

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.sku: str | None = None
        self.name: str | None = None
        self.description: str | None = None
        self.unit_price: str | None = None
        self.currency: str | None = None
        self.tax_rate = "0"
        self.active = True

    @classmethod
    def create(cls, product_id: str, fields: dict[str, Any]) -> Product:
        product = cls(product_id)
        product.record("ProductCreated", {"product_id": product_id, **{k: fields.get(k) for k in cls.FIELDS}})
        return product

    def update(self, changes: dict[str, Any]) -> None:
        changes = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if changes:
            self.record("ProductUpdated", {"product_id": self.id, "changes": changes})

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Product:
        product = cls(view["id"])
        _restore(product, view, cls.FIELDS)
        return product

    # `(type, data)`, as Aggregate.record applies an event before the aggregate has typed events
    def apply(self, event_type: str, data: dict[str, Any]) -> None:  # type: ignore[override]
        if event_type == "ProductCreated":
            for name in self.FIELDS:
                setattr(self, name, data.get(name))
        elif event_type == "ProductUpdated":
            for name, value in data["changes"].items():
                setattr(self, name, value)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, **{k: getattr(self, k) for k in self.FIELDS},
                "created_at": self.created_at, "updated_at": self.updated_at}


# --- pipelines ----------------------------------------------------------------------------


def stage_key(name: str) -> str:
    return "_".join(name.lower().split())[:60]


def _reasons(pairs: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"code": code, "label": label} for code, label in pairs]


def _reason_errors(settings: dict[str, Any]) -> dict[str, list[str]]:
    """What is wrong with the reason lists among `settings` (their shape is the schema's: codes unique here)."""
    errors = {}
    for name in REASON_LISTS.values():
        codes = [reason["code"] for reason in settings.get(name) or []]
        if len(set(codes)) != len(codes):
            errors[name] = ["reason codes must be unique"]
    return errors


class Pipeline(Aggregate):
    """Ordered open stages with win probabilities, then the closing stages `won` (100) and `lost` (0);
    and the reasons a deal may be won or lost for.

    A close names a reason by its code, or (with `free_text_reasons`, or when the pipeline lists
    none for that outcome) in words; a note may go with either (`closing_reason`)."""

    aggregate_type = "pipeline"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name: str | None = None
        self.stages: list[dict[str, Any]] = []
        self.win_reasons: list[dict[str, str]] = _reasons(DEFAULT_WIN_REASONS)
        self.loss_reasons: list[dict[str, str]] = _reasons(DEFAULT_LOSS_REASONS)
        self.free_text_reasons = True

    @classmethod
    def define(cls, pipeline_id: str, name: str, stages: list[dict[str, Any]],
               settings: dict[str, Any] | None = None) -> Pipeline:
        """A new pipeline; `settings` may give `win_reasons`, `loss_reasons` and `free_text_reasons`."""
        settings = settings or {}
        keys = [s.get("key") or stage_key(s["name"]) for s in stages]
        errors = _reason_errors(settings)
        if len(set(keys)) != len(keys):
            errors["stages"] = ["stage keys must be unique"]
        if {WON, LOST} & set(keys):
            errors["stages"] = ["`won` and `lost` are added to every pipeline; do not list them"]
        if errors:
            raise ValidationFailed("invalid pipeline", errors)
        pipeline = cls(pipeline_id)
        opened = [{"key": key, "name": s["name"], "probability": str(s["probability"]), "kind": "open"}
                  for key, s in zip(keys, stages, strict=True)]
        closing = [{"key": WON, "name": "Won", "probability": "100", "kind": WON},
                   {"key": LOST, "name": "Lost", "probability": "0", "kind": LOST}]
        pipeline.record("PipelineCreated", {
            "pipeline_id": pipeline_id, "name": name, "stages": opened + closing,
            "win_reasons": settings.get("win_reasons", pipeline.win_reasons),
            "loss_reasons": settings.get("loss_reasons", pipeline.loss_reasons),
            "free_text_reasons": settings.get("free_text_reasons", True)})
        return pipeline

    @classmethod
    def default(cls) -> Pipeline:
        return cls.define(DEFAULT_PIPELINE_ID, "Default",
                          [{"key": k, "name": n, "probability": p} for k, n, p in DEFAULT_STAGES])

    def update(self, changes: dict[str, Any]) -> None:
        """Rename, or change the reasons offered (closed deals keep the reasons they were given)."""
        errors = _reason_errors(changes)
        if errors:
            raise ValidationFailed("invalid reasons", errors)
        changes = {k: v for k, v in changes.items() if k in PIPELINE_SETTINGS and getattr(self, k) != v}
        if changes:
            self.record("PipelineUpdated", {"pipeline_id": self.id, "changes": changes})

    def stage(self, key: str) -> dict[str, Any] | None:
        return next((s for s in self.stages if s["key"] == key), None)

    @property
    def open_stages(self) -> list[dict[str, Any]]:
        return [s for s in self.stages if s["kind"] == "open"]

    def reasons(self, outcome: str) -> dict[str, str]:
        """The reasons a deal may be won (`won`) or lost (`lost`) for: code -> label."""
        return {reason["code"]: reason["label"] for reason in getattr(self, REASON_LISTS[outcome])}

    def closing_reason(self, outcome: str, reason: str | None, note: str | None) -> dict[str, str]:
        """The reason fields of a DealWon/DealLost: `reason_code` when `reason` is one of the
        pipeline's codes, `reason` (the why in words: that code's label, or the words given),
        `reason_note` when a note was given. Words instead of a code only when the pipeline
        allows free text or lists no reason for the outcome; a lost deal needs a reason."""
        listed = self.reasons(outcome)
        fields: dict[str, str] = {}
        if reason is None:
            if outcome == LOST:
                raise ValidationFailed("a reason is required", {"reason": ["required"]})
        elif reason in listed:
            fields = {"reason_code": reason, "reason": listed[reason]}
        elif self.free_text_reasons or not listed:
            fields = {"reason": reason}
        else:
            kind = "win" if outcome == WON else "loss"
            raise ValidationFailed(f"not a {kind} reason of the pipeline", {"reason": [
                f"not one of pipeline {self.id}'s {kind} reasons: {', '.join(listed)}"]})
        if note:
            fields["reason_note"] = note
        return fields

    # `(type, data)`, as Aggregate.record applies an event before the aggregate has typed events
    def apply(self, event_type: str, data: dict[str, Any]) -> None:  # type: ignore[override]
        if event_type == "PipelineCreated":
            self.name, self.stages = data["name"], list(data["stages"])
            self.win_reasons = list(data.get("win_reasons", self.win_reasons))
            self.loss_reasons = list(data.get("loss_reasons", self.loss_reasons))
            self.free_text_reasons = data.get("free_text_reasons", True)
        elif event_type == "PipelineUpdated":
            for name, value in data["changes"].items():
                setattr(self, name, value)

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Pipeline:
        pipeline = cls(view["id"])
        _restore(pipeline, view, ("name",))
        pipeline.stages = list(view["stages"])
        for name in (*REASON_LISTS.values(), "free_text_reasons"):
            if view.get(name) is not None:  # a document folded before reasons existed keeps the defaults
                setattr(pipeline, name, view[name])
        return pipeline

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "name": self.name, "stages": self.stages,
                "win_reasons": self.win_reasons, "loss_reasons": self.loss_reasons,
                "free_text_reasons": self.free_text_reasons,
                "created_at": self.created_at, "updated_at": self.updated_at}


# --- deals --------------------------------------------------------------------------------

DEAL_FIELDS = ("title", "company_id", "owner", "team", "amount", "currency", "expected_close")
# why a deal was won or lost, as its view shows it: the why in words (a code's label, or the words
# given), the pipeline's code (what reports group by), and the note; the words and notes are personal
REASON_FIELDS = ("won_reason", "won_reason_code", "won_reason_note",
                 "lost_reason", "lost_reason_code", "lost_reason_note")


class Deal(ErasableRecord):
    """open → won (a reason may be given) | lost (a reason is required) → reopened (open again, in the
    stage it left). Reasons are checked against the deal's pipeline (`Pipeline.closing_reason`)."""

    aggregate_type = "deal"
    erased_event, id_field, contact_changed_event = "DealCustomerDataErased", "deal_id", "DealContactChanged"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.title: str | None = None
        self.contact_id: str | None = None
        self.company_id: str | None = None
        self.owner: str | None = None
        self.team: str | None = None  # the owning team: team-scoped roles see only their team's deals
        self.amount: str = "0"
        self.currency: str = "USD"
        self.expected_close: str | None = None
        self.pipeline_id: str = DEFAULT_PIPELINE_ID
        self.stage: str | None = None
        self.status = "open"
        self.won_reason: str | None = None  # REASON_FIELDS
        self.won_reason_code: str | None = None
        self.won_reason_note: str | None = None
        self.lost_reason: str | None = None
        self.lost_reason_code: str | None = None
        self.lost_reason_note: str | None = None
        self.won_at: str | None = None
        self.lost_at: str | None = None
        self.opened_at: str | None = None
        self.quote_id: str | None = None
        self.stage_history: list[dict[str, Any]] = []

    @classmethod
    def create(cls, deal_id: str, fields: dict[str, Any], pipeline: Pipeline, at: str) -> Deal:
        stage = fields.get("stage") or pipeline.open_stages[0]["key"]
        found = pipeline.stage(stage)
        if found is None or found["kind"] != "open":
            raise ValidationFailed("unknown stage", {"stage": [f"not an open stage of pipeline {pipeline.id}"]})
        deal = cls(deal_id)
        data = {"deal_id": deal_id, "contact_id": fields["contact_id"], "pipeline_id": pipeline.id,
                "stage": stage, "at": at, **{k: fields.get(k) for k in DEAL_FIELDS}}
        deal.record("DealCreated", data)
        return deal

    def _require_open(self, action: str) -> None:
        if self.status != "open":
            raise Conflict(f"cannot {action}: the deal is {self.status}")

    def update(self, changes: dict[str, Any]) -> None:
        changes = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if changes:
            self.record("DealUpdated", {"deal_id": self.id, "changes": changes})

    def move(self, stage: str, pipeline: Pipeline, at: str) -> None:
        self._require_open("move its stage")
        found = pipeline.stage(stage)
        if found is None:
            raise ValidationFailed("unknown stage", {"stage": [f"not a stage of pipeline {pipeline.id}"]})
        if found["kind"] != "open":
            raise Conflict(f"{stage} is a closing stage: a deal reaches it by being won or lost, not moved")
        if stage != self.stage:
            self.record("DealStageChanged", {"deal_id": self.id, "from": self.stage, "to": stage,
                                             "probability": found["probability"], "at": at})

    def win(self, at: str, amount: str | None = None, quote_id: str | None = None,
            pipeline: Pipeline | None = None, reason: str | None = None, note: str | None = None) -> None:
        """Won; a `reason` (a code of `pipeline`'s win reasons, or words where it allows them) and a
        `note` are optional."""
        self._require_open("mark it won")
        data = {"deal_id": self.id, "contact_id": self.contact_id, "from": self.stage,
                "amount": amount or self.amount, "currency": self.currency, "at": at}
        if quote_id:
            data["quote_id"] = quote_id
        if reason is not None and pipeline is None:
            raise ValueError("a win reason is checked against the deal's pipeline")
        why = pipeline.closing_reason(WON, reason, note) if pipeline else ({"reason_note": note} if note else {})
        self.record("DealWon", {**data, **why})

    def lose(self, pipeline: Pipeline, at: str, reason: str | None, note: str | None = None) -> None:
        """Lost, for `reason` (a code of `pipeline`'s loss reasons, or words where it allows them), with an
        optional `note`."""
        self._require_open("mark it lost")
        if reason is not None and not reason.strip():
            reason = None
        why = pipeline.closing_reason(LOST, reason, note)
        self.record("DealLost", {"deal_id": self.id, "from": self.stage, **why, "at": at})

    def reopen(self, at: str) -> None:
        if self.status == "open":
            raise Conflict("the deal is already open")
        previous = [h["stage"] for h in self.stage_history if h["stage"] not in (WON, LOST)]
        self.record("DealReopened", {"deal_id": self.id, "from": self.status, "to": previous[-1], "at": at})

    def _enter(self, stage: str, at: str) -> None:
        if self.stage_history and self.stage_history[-1]["left_at"] is None:
            self.stage_history[-1] = {**self.stage_history[-1], "left_at": at}
        self.stage_history.append({"stage": stage, "entered_at": at, "left_at": None})
        self.stage = stage

    # `(type, data)`, as Aggregate.record applies an event before the aggregate has typed events
    def apply(self, event_type: str, data: dict[str, Any]) -> None:  # type: ignore[override]
        if event_type == "DealCreated":
            for name in DEAL_FIELDS:
                setattr(self, name, data.get(name))
            self.contact_id, self.pipeline_id, self.opened_at = data["contact_id"], data["pipeline_id"], data["at"]
            self._enter(data["stage"], data["at"])
        elif event_type == "DealUpdated":
            for name, value in data["changes"].items():
                setattr(self, name, value)
        elif event_type == "DealStageChanged":
            self._enter(data["to"], data["at"])
        elif event_type == "DealWon":
            self.status, self.won_at, self.amount = WON, data["at"], data["amount"]
            self.quote_id = data.get("quote_id") or self.quote_id
            self._closed_for(WON, data)
            self._enter(WON, data["at"])
        elif event_type == "DealLost":
            self.status, self.lost_at = LOST, data["at"]
            self._closed_for(LOST, data)
            self._enter(LOST, data["at"])
        elif event_type == "DealReopened":
            self.status, self.won_at, self.lost_at = "open", None, None
            for name in REASON_FIELDS:
                setattr(self, name, None)
            self._enter(data["to"], data["at"])
        elif event_type == "DealContactChanged":
            self._contact_changed(data)
        elif event_type == self.erased_event:
            self.title, self.customer_data_erased_at = None, data["at"]
            for name in ("won_reason", "won_reason_note", "lost_reason", "lost_reason_note"):
                setattr(self, name, None)

    def _closed_for(self, outcome: str, data: dict[str, Any]) -> None:
        """The reason of a DealWon/DealLost (one from before codes existed is words only)."""
        setattr(self, f"{outcome}_reason", data.get("reason"))
        setattr(self, f"{outcome}_reason_code", data.get("reason_code"))
        setattr(self, f"{outcome}_reason_note", data.get("reason_note"))

    @property
    def closed_at(self) -> str | None:
        return self.won_at or self.lost_at

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Deal:
        deal = cls(view["id"])
        _restore(deal, view, (*DEAL_FIELDS, "contact_id", "pipeline_id", "stage", "status", *REASON_FIELDS,
                              "won_at", "lost_at", "quote_id", "customer_data_erased_at"))
        deal.stage_history = [dict(entry) for entry in view["stage_history"]]
        deal.opened_at = deal.stage_history[0]["entered_at"] if deal.stage_history else None  # DealCreated's `at`
        return deal

    def history_view(self, now: datetime) -> list[dict[str, Any]]:
        """Stage history with the time spent in each stage (the current one: until `now`)."""
        out = []
        for entry in self.stage_history:
            entered = parse_time(entry["entered_at"])
            left = _time(entry["left_at"]) or now
            out.append({**entry, "seconds_in_stage": max(int((left - entered).total_seconds()), 0)})
        return out

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "title": self.title, "contact_id": self.contact_id,
                "company_id": self.company_id, "owner": self.owner, "team": self.team, "amount": self.amount,
                "currency": self.currency,
                "expected_close": self.expected_close, "pipeline_id": self.pipeline_id, "stage": self.stage,
                "status": self.status, **{name: getattr(self, name) for name in REASON_FIELDS},
                "won_at": self.won_at,
                "lost_at": self.lost_at, "quote_id": self.quote_id, "stage_history": self.stage_history,
                "customer_data_erased_at": self.customer_data_erased_at,
                "created_at": self.created_at, "updated_at": self.updated_at}


# --- activities ---------------------------------------------------------------------------

ACTIVITY_FIELDS = ("type", "subject", "notes", "due_at", "owner", "team", "deal_id", "contact_id")


class Activity(ErasableRecord):
    aggregate_type = "activity"
    erased_event, id_field, contact_changed_event = "ActivityCustomerDataErased", "activity_id", \
        "ActivityContactChanged"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        for name in ACTIVITY_FIELDS:
            setattr(self, name, None)
        self.status = "open"
        self.completed_at: str | None = None
        self.outcome: str | None = None

    @classmethod
    def schedule(cls, activity_id: str, fields: dict[str, Any]) -> Activity:
        activity = cls(activity_id)
        activity.record("ActivityScheduled", {"activity_id": activity_id,
                                              **{k: fields.get(k) for k in ACTIVITY_FIELDS}})
        return activity

    def complete(self, at: str, outcome: str | None) -> None:
        if self.status == "completed":
            raise Conflict("the activity is already completed")
        self.record("ActivityCompleted", {"activity_id": self.id, "at": at, "outcome": outcome})

    # `(type, data)`, as Aggregate.record applies an event before the aggregate has typed events
    def apply(self, event_type: str, data: dict[str, Any]) -> None:  # type: ignore[override]
        if event_type == "ActivityScheduled":
            for name in ACTIVITY_FIELDS:
                setattr(self, name, data.get(name))
        elif event_type == "ActivityCompleted":
            self.status, self.completed_at, self.outcome = "completed", data["at"], data.get("outcome")
        elif event_type == "ActivityContactChanged":
            self._contact_changed(data)
        elif event_type == self.erased_event:
            self.subject = self.notes = self.outcome = None
            self.customer_data_erased_at = data["at"]

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Activity:
        activity = cls(view["id"])
        _restore(activity, view, (*ACTIVITY_FIELDS, "status", "completed_at", "outcome", "customer_data_erased_at"))
        return activity

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, **{k: getattr(self, k) for k in ACTIVITY_FIELDS},
                "status": self.status, "completed_at": self.completed_at, "outcome": self.outcome,
                "customer_data_erased_at": self.customer_data_erased_at,
                "created_at": self.created_at, "updated_at": self.updated_at}


# --- quotes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuoteLine:
    description: str
    quantity: Decimal
    unit_price: Decimal
    discount_percent: Decimal
    tax_rate: Decimal
    product_id: str | None = None
    sku: str | None = None


def priced_lines(lines: list[QuoteLine], currency: str) -> dict[str, Any]:
    """The lines as stored in QuoteDrafted: inputs and every rounded amount, plus the totals."""
    totals = money.price([money.Line(ln.quantity, ln.unit_price, ln.discount_percent, ln.tax_rate)
                          for ln in lines], currency)
    out = []
    for line, amounts in zip(lines, totals.lines, strict=True):
        out.append({"product_id": line.product_id, "sku": line.sku, "description": line.description,
                    "quantity": f"{line.quantity.normalize():f}", "unit_price": money.text(line.unit_price, currency),
                    "discount_percent": f"{line.discount_percent.normalize():f}",
                    "tax_rate": f"{line.tax_rate.normalize():f}",
                    "discount": money.text(amounts.discount, currency), "net": money.text(amounts.net, currency),
                    "tax": money.text(amounts.tax, currency), "total": money.text(amounts.total, currency)})
    return {"lines": out, "subtotal": money.text(totals.subtotal, currency),
            "discount": money.text(totals.discount, currency), "tax": money.text(totals.tax, currency),
            "total": money.text(totals.total, currency)}


class Quote(ErasableRecord):
    """draft → sent (QuoteIssued) → accepted | rejected | expired."""

    aggregate_type = "quote"
    erased_event, id_field = "QuoteCustomerDataErased", "quote_id"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.number: str | None = None
        self.deal_id: str | None = None
        self.contact_id: str | None = None
        self.currency = "USD"
        self.valid_until: str | None = None
        self.locale: str | None = None
        self.notes: str | None = None
        self.lines: list[dict[str, Any]] = []
        self.totals: dict[str, str] = {}
        self.status = "draft"
        self.sent_at = self.accepted_at = self.rejected_at = self.expired_at = None
        self.rejection_reason: str | None = None

    @classmethod
    def draft(cls, quote_id: str, number: str, deal: Deal, lines: list[QuoteLine], fields: dict[str, Any]) -> Quote:
        if deal.status == LOST:
            raise Conflict("cannot quote a lost deal; reopen it first")
        priced = priced_lines(lines, deal.currency)
        quote = cls(quote_id)
        quote.record("QuoteDrafted", {"quote_id": quote_id, "number": number, "deal_id": deal.id,
                                      "contact_id": deal.contact_id, "currency": deal.currency,
                                      "valid_until": fields["valid_until"], "locale": fields.get("locale"),
                                      "notes": fields.get("notes"), **priced})
        return quote

    def _require(self, status: str, action: str) -> None:
        if self.status != status:
            raise Conflict(f"cannot {action} a quote that is {self.status}")

    def expired_on(self, today: date) -> bool:
        return self.valid_until is not None and date.fromisoformat(self.valid_until) < today

    def send(self, at: str, today: date) -> None:
        self._require("draft", "send")
        if self.expired_on(today):
            raise Conflict("the quote's validity date has passed; draft a new one")
        self.record("QuoteIssued", {"quote_id": self.id, "number": self.number, "deal_id": self.deal_id,
                                    "contact_id": self.contact_id, "total": self.totals["total"],
                                    "currency": self.currency, "valid_until": self.valid_until, "at": at})

    def accept(self, at: str, today: date) -> None:
        self._require("sent", "accept")
        if self.expired_on(today):
            raise Conflict(f"the quote expired after {self.valid_until}")
        self.record("QuoteAccepted", {"quote_id": self.id, "number": self.number, "deal_id": self.deal_id,
                                      "contact_id": self.contact_id, "total": self.totals["total"],
                                      "currency": self.currency, "at": at})

    def reject(self, at: str, reason: str | None) -> None:
        self._require("sent", "reject")
        self.record("QuoteRejected", {"quote_id": self.id, "deal_id": self.deal_id, "reason": reason, "at": at})

    def expire(self, at: str, today: date) -> bool:
        if self.status != "sent" or not self.expired_on(today):
            return False
        self.record("QuoteExpired", {"quote_id": self.id, "deal_id": self.deal_id, "at": at})
        return True

    # `(type, data)`, as Aggregate.record applies an event before the aggregate has typed events
    def apply(self, event_type: str, data: dict[str, Any]) -> None:  # type: ignore[override]
        if event_type == "QuoteDrafted":
            self.number, self.deal_id, self.contact_id = data["number"], data["deal_id"], data["contact_id"]
            self.currency, self.valid_until, self.locale = data["currency"], data["valid_until"], data.get("locale")
            self.notes, self.lines = data.get("notes"), list(data["lines"])
            self.totals = {k: data[k] for k in ("subtotal", "discount", "tax", "total")}
        elif event_type == "QuoteIssued":
            self.status, self.sent_at = "sent", data["at"]
        elif event_type == "QuoteAccepted":
            self.status, self.accepted_at = "accepted", data["at"]
        elif event_type == "QuoteRejected":
            self.status, self.rejected_at, self.rejection_reason = "rejected", data["at"], data.get("reason")
        elif event_type == "QuoteExpired":
            self.status, self.expired_at = "expired", data["at"]
        elif event_type == "QuoteContactChanged":
            self.contact_id = data["to"]
        elif event_type == self.erased_event:
            self.notes, self.rejection_reason, self.customer_data_erased_at = None, None, data["at"]
            self.lines = [{**line, "description": None} for line in self.lines]

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Quote:
        quote = cls(view["id"])
        _restore(quote, view, ("number", "deal_id", "contact_id", "currency", "valid_until", "locale", "notes",
                               "status", "sent_at", "accepted_at", "rejected_at", "rejection_reason", "expired_at",
                               "customer_data_erased_at"))
        quote.lines = list(view["lines"])
        quote.totals = {k: view[k] for k in ("subtotal", "discount", "tax", "total") if k in view}
        return quote

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "number": self.number, "deal_id": self.deal_id,
                "contact_id": self.contact_id, "currency": self.currency, "valid_until": self.valid_until,
                "locale": self.locale, "notes": self.notes, "lines": self.lines, **self.totals,
                "status": self.status, "sent_at": self.sent_at, "accepted_at": self.accepted_at,
                "rejected_at": self.rejected_at, "rejection_reason": self.rejection_reason,
                "expired_at": self.expired_at, "customer_data_erased_at": self.customer_data_erased_at,
                "created_at": self.created_at, "updated_at": self.updated_at}


# --- customer value -----------------------------------------------------------------------


class Customer(Aggregate):
    """A contact as sales ranks it; its stream (id = the contact id) records tier changes."""

    aggregate_type = "customer"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.tier = "standard"

    def set_tier(self, tier: str, clv: str, currency: str) -> bool:
        if tier == self.tier:
            return False
        self.record("CustomerTierChanged", {"contact_id": self.id, "tier": tier, "previous_tier": self.tier,
                                            "clv": {"amount": clv, "currency": currency}})
        return True

    # `(type, data)`, as Aggregate.record applies an event before the aggregate has typed events
    def apply(self, event_type: str, data: dict[str, Any]) -> None:  # type: ignore[override]
        if event_type == "CustomerTierChanged":
            self.tier = data["tier"]

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "tier": self.tier}
