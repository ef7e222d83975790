"""Sales aggregates: pure Python, no I/O. Each decides and records events; `apply` folds them.

Money in events is a decimal string plus its currency (exactly what the API shows);
times that matter to the domain (stage entered, won, lost) travel in the event as
RFC 3339 text, passed in by the command, so folding never asks the clock.

Each aggregate declares its events (crmkit.domainevents): the catalogue's meanings, schemas and
personal fields follow from the dataclasses. Stages, reasons and quote lines stay plain JSON in
events and state, their shapes given once here (`STAGE`, `REASON`, `QUOTE_LINE`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from crm_sales import money
from crmkit.aggregate import Aggregate
from crmkit.domainevents import DomainEvent, json_schema, personal_fields, spec
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
    ("price", "Price"),
    ("product_fit", "Product fit"),
    ("relationship", "Relationship"),
    ("timing", "Timing"),
    ("service", "Service and support"),
    ("other", "Other"),
)
DEFAULT_LOSS_REASONS = (
    ("price", "Price"),
    ("product_fit", "Product fit"),
    ("competitor", "Chose a competitor"),
    ("budget", "No budget"),
    ("timing", "Timing"),
    ("no_decision", "No decision"),
    ("relationship", "Relationship"),
    ("other", "Other"),
)
REASON_LISTS = {WON: "win_reasons", LOST: "loss_reasons"}
PIPELINE_SETTINGS = ("name", "win_reasons", "loss_reasons", "free_text_reasons")
ACTIVITY_TYPES = ("call", "meeting", "task", "email")
TIERS = ("strategic", "standard")

# JSON shapes and texts the events' type hints cannot say
CURRENCIES = sorted(money.MINOR_UNITS)
DECIMAL = r"^[0-9]+(\.[0-9]+)?$"  # a non-negative decimal as text
MONEY = "money as a decimal string, in `currency`"
PERCENT = "a percentage 0..100 as a decimal string"
OPEN_STAGE = "an open stage key of the deal's pipeline"
QUOTE_NUMBER = "^Q-[0-9]{4}-[0-9]{6,}$"
TEAM = "the owning team (added later: absent in older events); team-scoped roles see only its records"
REPOINTED = ("contact_merged", "contact_unmerged", "reassigned")
REPOINTED_WHY = (
    "why: the contact was merged into `to`; a merge was reversed (back to the duplicate `to`); or a "
    "person gave the deal to `to` (the last two added later: new values)"
)
MERGE_ID = (
    "the contacts service's ContactMerged event that caused the move (or whose reversal did); also the "
    "envelope's causationid"
)
REASON_WORDS = "why, in words (personal, sealed)"
REASON_CODE_WHY = "the pipeline's reason code, when one was chosen (not personal: BI groups by it)"
REASON_NOTE = "free text given with the reason (personal, sealed)"


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


PERCENT_TEXT = {"type": "string", "pattern": DECIMAL, "description": PERCENT}
MONEY_TEXT = {"type": "string", "pattern": DECIMAL, "description": MONEY}
STAGE = _object(
    ["key", "name", "probability", "kind"],
    {
        "key": {"type": "string", "pattern": "^[a-z0-9_]{1,60}$"},
        "name": {"type": "string", "minLength": 1},
        "probability": PERCENT_TEXT,
        "kind": {"enum": ["open", WON, LOST]},
    },
)
REASON = _object(
    ["code", "label"], {"code": {"type": "string", "pattern": REASON_CODE}, "label": {"type": "string", "minLength": 1}}
)
QUOTE_LINE = _object(
    [
        "product_id",
        "sku",
        "description",
        "quantity",
        "unit_price",
        "discount_percent",
        "tax_rate",
        "discount",
        "net",
        "tax",
        "total",
    ],
    {
        "product_id": {"type": ["string", "null"], "minLength": 1},
        "sku": {"type": ["string", "null"]},
        "description": {"type": "string"},
        "quantity": {"type": "string", "pattern": DECIMAL, "description": "a non-negative decimal as text"},
        "unit_price": MONEY_TEXT,
        "discount_percent": PERCENT_TEXT,
        "tax_rate": PERCENT_TEXT,
        "discount": MONEY_TEXT,
        "net": MONEY_TEXT,
        "tax": MONEY_TEXT,
        "total": MONEY_TEXT,
    },
)


def _changes(created: type[DomainEvent], names: tuple[str, ...]) -> dict[str, Any]:
    """The shape of an `...Updated` event's `changes`: any of `names`, each as its `created` event has it."""
    fields = json_schema(created)["properties"]
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: fields[name] for name in names},
        "minProperties": 1,
    }


def _time(value: str | None) -> datetime | None:
    return parse_time(value) if value else None


def _restore(aggregate: Aggregate, view: dict[str, Any]) -> None:
    """Set the state `__init__` declares (`state_names`), the version and times back from a `view()`
    (how projections continue a fold); what the view does not show keeps its default."""
    for name in aggregate.state_names():
        if name in view:
            setattr(aggregate, name, view[name])
    aggregate.version = view["version"]
    aggregate.created_at, aggregate.updated_at = view.get("created_at"), view.get("updated_at")


class ErasableRecord(Aggregate):
    """A deal, activity or quote: a record about one contact, whose words are dropped when that
    contact is erased. `<Kind>CustomerDataErased` makes every fold (read models, a rebuild, a
    load) forget the personal fields at once — also those of events stored in plain text before
    sales sealed them; the caller destroys the record's key, so the sealed copies stay unreadable."""

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.customer_data_erased_at: str | None = None
        self.contact_id: str | None = None
        # the last contact change, if a merge made it: {"merge_id", "from"} (what an unmerge moves back)
        self.merge_move: dict[str, Any] | None = None

    def contact_changed(self, to: str, reason: str, merge_id: str | None) -> DomainEvent:
        """The record's `<Kind>ContactChanged` (a quote follows its deal: it has none)."""
        raise TypeError(f"a {self.aggregate_type} does not change contact")

    def customer_data_erased(self, contact_id: str, at: str) -> DomainEvent:
        """The record's `<Kind>CustomerDataErased`."""
        raise NotImplementedError

    def change_contact(self, contact_id: str, reason: str, merge_id: str | None = None) -> None:
        """Belong to another contact; `merge_id` names the contacts' ContactMerged (or, for
        `contact_unmerged`, the merge reversed) that caused it."""
        if contact_id != self.contact_id:
            self.record(self.contact_changed(contact_id, reason, merge_id))

    def move_back(self, duplicate_id: str, survivor_id: str, merge_id: str | None) -> bool:
        """An unmerge: go back to `duplicate_id` if the merge `merge_id` moved this record here and
        nothing moved it since (a person's reassignment stays). A merge recorded before merges were
        named counts when it moved this record from the duplicate to the survivor."""
        move = self.merge_move
        if (
            move is None
            or self.contact_id != survivor_id
            or move["from"] != duplicate_id
            or move["merge_id"] not in (merge_id, None)
        ):
            return False
        self.change_contact(duplicate_id, "contact_unmerged", merge_id)
        return True

    def _contact_changed(self, from_: str | None, to: str, reason: str, merge_id: str | None) -> None:
        self.contact_id = to
        self.merge_move = {"merge_id": merge_id, "from": from_} if reason == "contact_merged" else None

    def erase_customer_data(self, contact_id: str, at: str) -> bool:
        """Record the erasure once; a repeat (the same person's merged records, a redelivery) records nothing."""
        if self.customer_data_erased_at is not None:
            return False
        self.record(self.customer_data_erased(contact_id, at))
        return True


# --- products -----------------------------------------------------------------------------

PRODUCT_FIELDS = ("sku", "name", "description", "unit_price", "currency", "tax_rate", "active")


class Product(Aggregate):
    aggregate_type = "product"

    class ProductCreated(DomainEvent):
        """A product (SKU, price, tax rate) was added to the catalogue."""

        product_id: str = spec(minLength=1)
        sku: str = spec(minLength=1)
        name: str = spec(minLength=1)
        description: str | None
        unit_price: str = spec(pattern=DECIMAL, description=MONEY)
        currency: str = spec(enum=CURRENCIES)
        tax_rate: str = spec(pattern=DECIMAL, description=PERCENT)
        active: bool

    class ProductUpdated(DomainEvent):
        """Fields of a product changed; `changes` holds the new values."""

        product_id: str = spec(minLength=1)
        changes: dict[str, Any] = spec(schema=lambda: _changes(Product.ProductCreated, PRODUCT_FIELDS[1:]))

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
        values: dict[str, Any] = {k: fields.get(k) for k in PRODUCT_FIELDS}
        product.record(cls.ProductCreated(product_id=product_id, **values))
        return product

    def update(self, changes: dict[str, Any]) -> None:
        changes = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if changes:
            self.record(self.ProductUpdated(product_id=self.id, changes=changes))

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Product:
        product = cls(view["id"])
        _restore(product, view)
        return product

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a product."""

    @apply.register(ProductCreated)
    def _on_created(self, event: ProductCreated) -> None:
        self.adopt(event)

    @apply.register(ProductUpdated)
    def _on_updated(self, event: ProductUpdated) -> None:
        for name, value in event.changes.items():
            setattr(self, name, value)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            **{k: getattr(self, k) for k in self.state_names()},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


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

    class PipelineCreated(DomainEvent):
        """A sales pipeline was defined: its open stages in order with win probabilities, then `won` and `lost`;
        and the reasons deals are won and lost for (added later: a pipeline defined before has none of the three
        fields, and offers the default reasons with `free_text_reasons` true)."""

        pipeline_id: str = spec(minLength=1)
        name: str = spec(minLength=1)
        stages: list[dict[str, Any]] = spec(items=STAGE, minItems=3)
        win_reasons: list[dict[str, str]] | None = spec(
            omit_none=True, items=REASON, description="the reasons a deal may be won for, in the order offered"
        )
        loss_reasons: list[dict[str, str]] | None = spec(
            omit_none=True, items=REASON, description="the reasons a deal may be lost for, in the order offered"
        )
        free_text_reasons: bool | None = spec(
            omit_none=True, description=("whether a won or lost deal's reason may be words instead of one of the codes")
        )

    class PipelineUpdated(DomainEvent):
        """A pipeline was renamed or its reasons changed; `changes` holds the new values (closed deals keep
        theirs)."""

        pipeline_id: str = spec(minLength=1)
        changes: dict[str, Any] = spec(schema=lambda: _changes(Pipeline.PipelineCreated, PIPELINE_SETTINGS))

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name: str | None = None
        self.stages: list[dict[str, Any]] = []
        self.win_reasons: list[dict[str, str]] = _reasons(DEFAULT_WIN_REASONS)
        self.loss_reasons: list[dict[str, str]] = _reasons(DEFAULT_LOSS_REASONS)
        self.free_text_reasons = True

    @classmethod
    def define(
        cls, pipeline_id: str, name: str, stages: list[dict[str, Any]], settings: dict[str, Any] | None = None
    ) -> Pipeline:
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
        opened = [
            {"key": key, "name": s["name"], "probability": str(s["probability"]), "kind": "open"}
            for key, s in zip(keys, stages, strict=True)
        ]
        closing = [
            {"key": WON, "name": "Won", "probability": "100", "kind": WON},
            {"key": LOST, "name": "Lost", "probability": "0", "kind": LOST},
        ]
        pipeline.record(
            cls.PipelineCreated(
                pipeline_id=pipeline_id,
                name=name,
                stages=opened + closing,
                win_reasons=settings.get("win_reasons", pipeline.win_reasons),
                loss_reasons=settings.get("loss_reasons", pipeline.loss_reasons),
                free_text_reasons=settings.get("free_text_reasons", True),
            )
        )
        return pipeline

    @classmethod
    def default(cls) -> Pipeline:
        return cls.define(
            DEFAULT_PIPELINE_ID, "Default", [{"key": k, "name": n, "probability": p} for k, n, p in DEFAULT_STAGES]
        )

    def update(self, changes: dict[str, Any]) -> None:
        """Rename, or change the reasons offered (closed deals keep the reasons they were given)."""
        errors = _reason_errors(changes)
        if errors:
            raise ValidationFailed("invalid reasons", errors)
        changes = {k: v for k, v in changes.items() if k in PIPELINE_SETTINGS and getattr(self, k) != v}
        if changes:
            self.record(self.PipelineUpdated(pipeline_id=self.id, changes=changes))

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
            raise ValidationFailed(
                f"not a {kind} reason of the pipeline",
                {"reason": [f"not one of pipeline {self.id}'s {kind} reasons: {', '.join(listed)}"]},
            )
        if note:
            fields["reason_note"] = note
        return fields

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a pipeline."""

    @apply.register(PipelineCreated)
    def _on_created(self, event: PipelineCreated) -> None:
        self.name, self.stages = event.name, list(event.stages)
        # a pipeline defined before reasons existed keeps the defaults
        self.win_reasons = list(event.win_reasons if event.win_reasons is not None else self.win_reasons)
        self.loss_reasons = list(event.loss_reasons if event.loss_reasons is not None else self.loss_reasons)
        self.free_text_reasons = event.free_text_reasons if event.free_text_reasons is not None else True

    @apply.register(PipelineUpdated)
    def _on_updated(self, event: PipelineUpdated) -> None:
        for name, value in event.changes.items():
            setattr(self, name, value)

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Pipeline:
        pipeline = cls(view["id"])
        # a document folded before reasons existed (null reasons) keeps the defaults
        _restore(pipeline, {name: value for name, value in view.items() if value is not None or name == "name"})
        pipeline.stages = list(view["stages"])
        return pipeline

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            **{k: getattr(self, k) for k in self.state_names()},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


# --- deals --------------------------------------------------------------------------------

DEAL_FIELDS = ("title", "company_id", "owner", "team", "amount", "currency", "expected_close")
DEAL_CHANGES = ("title", "company_id", "owner", "amount", "currency", "expected_close", "team")
# why a deal was won or lost, as its view shows it: the why in words (a code's label, or the words
# given), the pipeline's code (what reports group by), and the note; the words and notes are personal
REASON_FIELDS = (
    "won_reason",
    "won_reason_code",
    "won_reason_note",
    "lost_reason",
    "lost_reason_code",
    "lost_reason_note",
)


class Deal(ErasableRecord):
    """open → won (a reason may be given) | lost (a reason is required) → reopened (open again, in the
    stage it left). Reasons are checked against the deal's pipeline (`Pipeline.closing_reason`).
    Titles and reasons are free text that names people in practice ("Renewal for Ali Rezaei", "lost:
    Ali moved to a competitor"): personal, sealed with the record's key."""

    aggregate_type = "deal"

    class DealCreated(DomainEvent):
        """A deal was opened for a contact, in an open stage of a pipeline."""

        deal_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        pipeline_id: str = spec(minLength=1)
        stage: str = spec(minLength=1, description=OPEN_STAGE)
        at: str = spec(format="date-time")
        title: str = spec(minLength=1, personal=True)
        company_id: str | None
        owner: str | None
        team: str | None = spec(default=None, maxLength=100, description=TEAM)
        amount: str = spec(pattern=DECIMAL, description=MONEY)
        currency: str = spec(enum=CURRENCIES)
        expected_close: str | None = spec(format="date")

    class DealUpdated(DomainEvent):
        """Fields of a deal changed; `changes` holds the new values."""

        deal_id: str = spec(minLength=1)
        changes: dict[str, Any] = spec(schema=lambda: _changes(Deal.DealCreated, DEAL_CHANGES), personal=("title",))

    class DealStageChanged(DomainEvent):
        """An open deal moved to another open stage (with that stage's probability)."""

        deal_id: str = spec(minLength=1)
        from_: str = spec(wire="from", minLength=1, description=OPEN_STAGE)
        to: str = spec(minLength=1, description=OPEN_STAGE)
        probability: str = spec(pattern=DECIMAL, description=PERCENT)
        at: str = spec(format="date-time")

    class DealWon(DomainEvent):
        """The deal was won at `amount` (the accepted quote's total when `quote_id` is given): revenue for the
        contact; why, when given: `reason_code` (one of the pipeline's win reasons), `reason` (that reason's label,
        or the words given) and `reason_note`."""

        deal_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        from_: str = spec(wire="from", minLength=1, description=OPEN_STAGE)
        amount: str = spec(pattern=DECIMAL, description=MONEY)
        currency: str = spec(enum=CURRENCIES)
        at: str = spec(format="date-time")
        quote_id: str | None = spec(omit_none=True, minLength=1)
        reason_code: str | None = spec(omit_none=True, pattern=REASON_CODE, description=REASON_CODE_WHY)
        reason: str | None = spec(omit_none=True, minLength=1, description=REASON_WORDS, personal=True)
        reason_note: str | None = spec(omit_none=True, minLength=1, description=REASON_NOTE, personal=True)

    class DealLost(DomainEvent):
        """The deal was lost, and why: `reason` in words (the label of the pipeline's loss reason `reason_code` when
        one was chosen, else the words given; before codes existed, always the words), and `reason_note`."""

        deal_id: str = spec(minLength=1)
        from_: str = spec(wire="from", minLength=1, description=OPEN_STAGE)
        reason: str = spec(minLength=1, description=REASON_WORDS, personal=True)
        reason_code: str | None = spec(omit_none=True, pattern=REASON_CODE, description=REASON_CODE_WHY)
        reason_note: str | None = spec(omit_none=True, minLength=1, description=REASON_NOTE, personal=True)
        at: str = spec(format="date-time")

    class DealReopened(DomainEvent):
        """A won or lost deal is open again, in the open stage it was in before it closed (a won deal's revenue is
        withdrawn)."""

        deal_id: str = spec(minLength=1)
        from_: str = spec(wire="from", enum=(WON, LOST))
        to: str = spec(minLength=1, description=OPEN_STAGE)
        at: str = spec(format="date-time")

    class DealContactChanged(DomainEvent):
        """The deal now belongs to another contact: its contact was merged (`merge_id` names the merge), that merge
        was reversed, or a person reassigned it."""

        deal_id: str = spec(minLength=1)
        from_: str = spec(wire="from", minLength=1)
        to: str = spec(minLength=1)
        reason: str = spec(enum=REPOINTED, description=REPOINTED_WHY)
        merge_id: str | None = spec(omit_none=True, minLength=1, description=MERGE_ID)

    class DealCustomerDataErased(DomainEvent):
        """The deal's contact was erased: its title and its win or loss reason's words and note (not the code) read
        as null from here on (the record's key is destroyed, so earlier events' sealed fields stay unreadable
        too)."""

        deal_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        at: str = spec(format="date-time")

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
        values: dict[str, Any] = {k: fields.get(k) for k in DEAL_FIELDS}
        deal.record(
            cls.DealCreated(
                deal_id=deal_id, contact_id=fields["contact_id"], pipeline_id=pipeline.id, stage=stage, at=at, **values
            )
        )
        return deal

    def _require_open(self, action: str) -> str:
        """The open deal's stage; a closed deal cannot `action`."""
        if self.status != "open" or self.stage is None:
            raise Conflict(f"cannot {action}: the deal is {self.status}")
        return self.stage

    def update(self, changes: dict[str, Any]) -> None:
        changes = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if changes:
            self.record(self.DealUpdated(deal_id=self.id, changes=changes))

    def move(self, stage: str, pipeline: Pipeline, at: str) -> None:
        current = self._require_open("move its stage")
        found = pipeline.stage(stage)
        if found is None:
            raise ValidationFailed("unknown stage", {"stage": [f"not a stage of pipeline {pipeline.id}"]})
        if found["kind"] != "open":
            raise Conflict(f"{stage} is a closing stage: a deal reaches it by being won or lost, not moved")
        if stage != current:
            self.record(
                self.DealStageChanged(deal_id=self.id, from_=current, to=stage, probability=found["probability"], at=at)
            )

    def win(
        self,
        at: str,
        amount: str | None = None,
        quote_id: str | None = None,
        pipeline: Pipeline | None = None,
        reason: str | None = None,
        note: str | None = None,
    ) -> None:
        """Won; a `reason` (a code of `pipeline`'s win reasons, or words where it allows them) and a
        `note` are optional."""
        current = self._require_open("mark it won")
        if reason is not None and pipeline is None:
            raise ValueError("a win reason is checked against the deal's pipeline")
        why = pipeline.closing_reason(WON, reason, note) if pipeline else ({"reason_note": note} if note else {})
        assert self.contact_id is not None  # DealCreated requires one; a change only replaces it
        self.record(
            self.DealWon(
                deal_id=self.id,
                contact_id=self.contact_id,
                from_=current,
                amount=amount or self.amount,
                currency=self.currency,
                at=at,
                quote_id=quote_id or None,
                **why,
            )
        )

    def lose(self, pipeline: Pipeline, at: str, reason: str | None, note: str | None = None) -> None:
        """Lost, for `reason` (a code of `pipeline`'s loss reasons, or words where it allows them), with an
        optional `note`."""
        current = self._require_open("mark it lost")
        if reason is not None and not reason.strip():
            reason = None
        why = pipeline.closing_reason(LOST, reason, note)
        self.record(self.DealLost(deal_id=self.id, from_=current, at=at, **why))

    def reopen(self, at: str) -> None:
        if self.status == "open":
            raise Conflict("the deal is already open")
        previous = [h["stage"] for h in self.stage_history if h["stage"] not in (WON, LOST)]
        self.record(self.DealReopened(deal_id=self.id, from_=self.status, to=previous[-1], at=at))

    def contact_changed(self, to: str, reason: str, merge_id: str | None) -> DomainEvent:
        assert self.contact_id is not None  # DealCreated requires one
        return self.DealContactChanged(deal_id=self.id, from_=self.contact_id, to=to, reason=reason, merge_id=merge_id)

    def customer_data_erased(self, contact_id: str, at: str) -> DomainEvent:
        return self.DealCustomerDataErased(deal_id=self.id, contact_id=contact_id, at=at)

    def _enter(self, stage: str, at: str) -> None:
        if self.stage_history and self.stage_history[-1]["left_at"] is None:
            self.stage_history[-1] = {**self.stage_history[-1], "left_at": at}
        self.stage_history.append({"stage": stage, "entered_at": at, "left_at": None})
        self.stage = stage

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a deal."""

    @apply.register(DealCreated)
    def _on_created(self, event: DealCreated) -> None:
        self.adopt(event)  # contact, pipeline, title, company, owner, team, amount, currency, expected close
        self.opened_at = event.at
        self._enter(event.stage, event.at)

    @apply.register(DealUpdated)
    def _on_updated(self, event: DealUpdated) -> None:
        for name, value in event.changes.items():
            setattr(self, name, value)

    @apply.register(DealStageChanged)
    def _on_stage_changed(self, event: DealStageChanged) -> None:
        self._enter(event.to, event.at)

    @apply.register(DealWon)
    def _on_won(self, event: DealWon) -> None:
        self.status, self.won_at, self.amount = WON, event.at, event.amount
        self.quote_id = event.quote_id or self.quote_id
        self._closed_for(WON, event.reason, event.reason_code, event.reason_note)
        self._enter(WON, event.at)

    @apply.register(DealLost)
    def _on_lost(self, event: DealLost) -> None:
        self.status, self.lost_at = LOST, event.at
        self._closed_for(LOST, event.reason, event.reason_code, event.reason_note)
        self._enter(LOST, event.at)

    @apply.register(DealReopened)
    def _on_reopened(self, event: DealReopened) -> None:
        self.status, self.won_at, self.lost_at = "open", None, None
        for name in REASON_FIELDS:
            setattr(self, name, None)
        self._enter(event.to, event.at)

    @apply.register(DealContactChanged)
    def _on_contact_changed(self, event: DealContactChanged) -> None:
        self._contact_changed(event.from_, event.to, event.reason, event.merge_id)

    @apply.register(DealCustomerDataErased)
    def _on_erased(self, event: DealCustomerDataErased) -> None:
        self.title, self.customer_data_erased_at = None, event.at
        for name in ("won_reason", "won_reason_note", "lost_reason", "lost_reason_note"):
            setattr(self, name, None)

    def _closed_for(self, outcome: str, reason: str | None, code: str | None, note: str | None) -> None:
        """The reason of a DealWon/DealLost (one from before codes existed is words only)."""
        setattr(self, f"{outcome}_reason", reason)
        setattr(self, f"{outcome}_reason_code", code)
        setattr(self, f"{outcome}_reason_note", note)

    @property
    def closed_at(self) -> str | None:
        return self.won_at or self.lost_at

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Deal:
        deal = cls(view["id"])
        _restore(deal, view)
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
        return {
            "id": self.id,
            "version": self.version,
            "title": self.title,
            "contact_id": self.contact_id,
            "company_id": self.company_id,
            "owner": self.owner,
            "team": self.team,
            "amount": self.amount,
            "currency": self.currency,
            "expected_close": self.expected_close,
            "pipeline_id": self.pipeline_id,
            "stage": self.stage,
            "status": self.status,
            **{name: getattr(self, name) for name in REASON_FIELDS},
            "won_at": self.won_at,
            "lost_at": self.lost_at,
            "quote_id": self.quote_id,
            "stage_history": self.stage_history,
            "customer_data_erased_at": self.customer_data_erased_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


# --- activities ---------------------------------------------------------------------------

ACTIVITY_FIELDS = ("type", "subject", "notes", "due_at", "owner", "team", "deal_id", "contact_id")


class Activity(ErasableRecord):
    """A call, meeting, task or email; its subject, notes and outcome are personal."""

    aggregate_type = "activity"

    class ActivityScheduled(DomainEvent):
        """A call, meeting, task or email was scheduled (for a deal or contact)."""

        activity_id: str = spec(minLength=1)
        type: str = spec(enum=ACTIVITY_TYPES)
        subject: str = spec(minLength=1, personal=True)
        notes: str | None = spec(personal=True)
        due_at: str = spec(format="date-time")
        owner: str | None
        team: str | None = spec(default=None, maxLength=100, description=TEAM)
        deal_id: str | None = spec(minLength=1)
        contact_id: str | None = spec(minLength=1)

    class ActivityCompleted(DomainEvent):
        """The activity was done, with its outcome."""

        activity_id: str = spec(minLength=1)
        at: str = spec(format="date-time")
        outcome: str | None = spec(personal=True)

    class ActivityContactChanged(DomainEvent):
        """The activity now belongs to another contact: its contact was merged (`merge_id` names the merge) or that
        merge was reversed."""

        activity_id: str = spec(minLength=1)
        from_: str | None = spec(wire="from", minLength=1)
        to: str = spec(minLength=1)
        reason: str = spec(enum=REPOINTED, description=REPOINTED_WHY)
        merge_id: str | None = spec(omit_none=True, minLength=1, description=MERGE_ID)

    class ActivityCustomerDataErased(DomainEvent):
        """The activity's contact was erased: its subject, notes and outcome read as null from here on (the record's
        key is destroyed, so earlier events' sealed fields stay unreadable too)."""

        activity_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        at: str = spec(format="date-time")

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.type: str | None = None
        self.subject: str | None = None
        self.notes: str | None = None
        self.due_at: str | None = None
        self.owner: str | None = None
        self.team: str | None = None
        self.deal_id: str | None = None
        self.contact_id: str | None = None
        self.status = "open"
        self.completed_at: str | None = None
        self.outcome: str | None = None

    @classmethod
    def schedule(cls, activity_id: str, fields: dict[str, Any]) -> Activity:
        activity = cls(activity_id)
        values: dict[str, Any] = {k: fields.get(k) for k in ACTIVITY_FIELDS}
        activity.record(cls.ActivityScheduled(activity_id=activity_id, **values))
        return activity

    def complete(self, at: str, outcome: str | None) -> None:
        if self.status == "completed":
            raise Conflict("the activity is already completed")
        self.record(self.ActivityCompleted(activity_id=self.id, at=at, outcome=outcome))

    def contact_changed(self, to: str, reason: str, merge_id: str | None) -> DomainEvent:
        return self.ActivityContactChanged(
            activity_id=self.id, from_=self.contact_id, to=to, reason=reason, merge_id=merge_id
        )

    def customer_data_erased(self, contact_id: str, at: str) -> DomainEvent:
        return self.ActivityCustomerDataErased(activity_id=self.id, contact_id=contact_id, at=at)

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes an activity."""

    @apply.register(ActivityScheduled)
    def _on_scheduled(self, event: ActivityScheduled) -> None:
        self.adopt(event)

    @apply.register(ActivityCompleted)
    def _on_completed(self, event: ActivityCompleted) -> None:
        self.status, self.completed_at, self.outcome = "completed", event.at, event.outcome

    @apply.register(ActivityContactChanged)
    def _on_contact_changed(self, event: ActivityContactChanged) -> None:
        self._contact_changed(event.from_, event.to, event.reason, event.merge_id)

    @apply.register(ActivityCustomerDataErased)
    def _on_erased(self, event: ActivityCustomerDataErased) -> None:
        self.subject = self.notes = self.outcome = None
        self.customer_data_erased_at = event.at

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Activity:
        activity = cls(view["id"])
        _restore(activity, view)
        return activity

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            **{k: getattr(self, k) for k in ACTIVITY_FIELDS},
            "status": self.status,
            "completed_at": self.completed_at,
            "outcome": self.outcome,
            "customer_data_erased_at": self.customer_data_erased_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


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
    totals = money.price(
        [money.Line(ln.quantity, ln.unit_price, ln.discount_percent, ln.tax_rate) for ln in lines], currency
    )
    out = []
    for line, amounts in zip(lines, totals.lines, strict=True):
        out.append(
            {
                "product_id": line.product_id,
                "sku": line.sku,
                "description": line.description,
                "quantity": f"{line.quantity.normalize():f}",
                "unit_price": money.text(line.unit_price, currency),
                "discount_percent": f"{line.discount_percent.normalize():f}",
                "tax_rate": f"{line.tax_rate.normalize():f}",
                "discount": money.text(amounts.discount, currency),
                "net": money.text(amounts.net, currency),
                "tax": money.text(amounts.tax, currency),
                "total": money.text(amounts.total, currency),
            }
        )
    return {
        "lines": out,
        "subtotal": money.text(totals.subtotal, currency),
        "discount": money.text(totals.discount, currency),
        "tax": money.text(totals.tax, currency),
        "total": money.text(totals.total, currency),
    }


TOTALS = ("subtotal", "discount", "tax", "total")


class Quote(ErasableRecord):
    """draft → sent (QuoteIssued) → accepted | rejected | expired. Its notes, its lines' descriptions
    and a rejection reason are personal."""

    aggregate_type = "quote"

    class QuoteDrafted(DomainEvent):
        """A quote was drafted for a deal: priced lines (every amount rounded to the currency) and exact totals."""

        quote_id: str = spec(minLength=1)
        number: str = spec(pattern=QUOTE_NUMBER)
        deal_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        currency: str = spec(enum=CURRENCIES)
        valid_until: str = spec(format="date")
        locale: str | None
        notes: str | None = spec(personal=True)
        lines: list[dict[str, Any]] = spec(items=QUOTE_LINE, minItems=1, personal=("description",))
        subtotal: str = spec(pattern=DECIMAL, description=MONEY)
        discount: str = spec(pattern=DECIMAL, description=MONEY)
        tax: str = spec(pattern=DECIMAL, description=MONEY)
        total: str = spec(pattern=DECIMAL, description=MONEY)

    class QuoteIssued(DomainEvent):
        """The quote was sent to the customer."""

        quote_id: str = spec(minLength=1)
        number: str = spec(pattern=QUOTE_NUMBER)
        deal_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        total: str = spec(pattern=DECIMAL, description=MONEY)
        currency: str = spec(enum=CURRENCIES)
        valid_until: str = spec(format="date")
        at: str = spec(format="date-time")

    class QuoteAccepted(DomainEvent):
        """The customer accepted the quote (its deal is then usually won at its total)."""

        quote_id: str = spec(minLength=1)
        number: str = spec(pattern=QUOTE_NUMBER)
        deal_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        total: str = spec(pattern=DECIMAL, description=MONEY)
        currency: str = spec(enum=CURRENCIES)
        at: str = spec(format="date-time")

    class QuoteRejected(DomainEvent):
        """The customer rejected the quote (a reason when given)."""

        quote_id: str = spec(minLength=1)
        deal_id: str = spec(minLength=1)
        reason: str | None = spec(personal=True)
        at: str = spec(format="date-time")

    class QuoteExpired(DomainEvent):
        """A sent quote passed its validity date unanswered."""

        quote_id: str = spec(minLength=1)
        deal_id: str = spec(minLength=1)
        at: str = spec(format="date-time")

    class QuoteCustomerDataErased(DomainEvent):
        """The quote's contact was erased: its notes, its lines' descriptions and the rejection reason read as null
        from here on (the record's key is destroyed, so earlier events' sealed fields stay unreadable too)."""

        quote_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        at: str = spec(format="date-time")

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
        self.sent_at: str | None = None
        self.accepted_at: str | None = None
        self.rejected_at: str | None = None
        self.expired_at: str | None = None
        self.rejection_reason: str | None = None

    @classmethod
    def draft(cls, quote_id: str, number: str, deal: Deal, lines: list[QuoteLine], fields: dict[str, Any]) -> Quote:
        if deal.status == LOST:
            raise Conflict("cannot quote a lost deal; reopen it first")
        assert deal.contact_id is not None  # DealCreated requires one
        priced = priced_lines(lines, deal.currency)
        quote = cls(quote_id)
        quote.record(
            cls.QuoteDrafted(
                quote_id=quote_id,
                number=number,
                deal_id=deal.id,
                contact_id=deal.contact_id,
                currency=deal.currency,
                valid_until=fields["valid_until"],
                locale=fields.get("locale"),
                notes=fields.get("notes"),
                **priced,
            )
        )
        return quote

    def _require(self, status: str, action: str) -> tuple[str, str, str]:
        """The drafted quote's number, deal and contact; a quote not `status` cannot `action`."""
        if self.status != status:
            raise Conflict(f"cannot {action} a quote that is {self.status}")
        assert self.number is not None and self.deal_id is not None and self.contact_id is not None  # drafted
        return self.number, self.deal_id, self.contact_id

    def expired_on(self, today: date) -> bool:
        return self.valid_until is not None and date.fromisoformat(self.valid_until) < today

    def send(self, at: str, today: date) -> None:
        number, deal_id, contact_id = self._require("draft", "send")
        if self.expired_on(today):
            raise Conflict("the quote's validity date has passed; draft a new one")
        assert self.valid_until is not None  # QuoteDrafted requires it
        self.record(
            self.QuoteIssued(
                quote_id=self.id,
                number=number,
                deal_id=deal_id,
                contact_id=contact_id,
                total=self.totals["total"],
                currency=self.currency,
                valid_until=self.valid_until,
                at=at,
            )
        )

    def accept(self, at: str, today: date) -> None:
        number, deal_id, contact_id = self._require("sent", "accept")
        if self.expired_on(today):
            raise Conflict(f"the quote expired after {self.valid_until}")
        self.record(
            self.QuoteAccepted(
                quote_id=self.id,
                number=number,
                deal_id=deal_id,
                contact_id=contact_id,
                total=self.totals["total"],
                currency=self.currency,
                at=at,
            )
        )

    def reject(self, at: str, reason: str | None) -> None:
        _, deal_id, _ = self._require("sent", "reject")
        self.record(self.QuoteRejected(quote_id=self.id, deal_id=deal_id, reason=reason, at=at))

    def expire(self, at: str, today: date) -> bool:
        if self.status != "sent" or not self.expired_on(today):
            return False
        assert self.deal_id is not None  # QuoteDrafted requires it
        self.record(self.QuoteExpired(quote_id=self.id, deal_id=self.deal_id, at=at))
        return True

    def customer_data_erased(self, contact_id: str, at: str) -> DomainEvent:
        return self.QuoteCustomerDataErased(quote_id=self.id, contact_id=contact_id, at=at)

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a quote."""

    @apply.register(QuoteDrafted)
    def _on_drafted(self, event: QuoteDrafted) -> None:
        self.adopt(event)  # number, deal, contact, currency, valid until, locale, notes
        self.lines = list(event.lines)
        self.totals = {name: getattr(event, name) for name in TOTALS}

    @apply.register(QuoteIssued)
    def _on_issued(self, event: QuoteIssued) -> None:
        self.status, self.sent_at = "sent", event.at

    @apply.register(QuoteAccepted)
    def _on_accepted(self, event: QuoteAccepted) -> None:
        self.status, self.accepted_at = "accepted", event.at

    @apply.register(QuoteRejected)
    def _on_rejected(self, event: QuoteRejected) -> None:
        self.status, self.rejected_at, self.rejection_reason = "rejected", event.at, event.reason

    @apply.register(QuoteExpired)
    def _on_expired(self, event: QuoteExpired) -> None:
        self.status, self.expired_at = "expired", event.at

    @apply.register(QuoteCustomerDataErased)
    def _on_erased(self, event: QuoteCustomerDataErased) -> None:
        self.notes, self.rejection_reason, self.customer_data_erased_at = None, None, event.at
        self.lines = [{**line, "description": None} for line in self.lines]

    @classmethod
    def restore(cls, view: dict[str, Any]) -> Quote:
        quote = cls(view["id"])
        _restore(quote, view)
        quote.lines = list(view["lines"])
        quote.totals = {k: view[k] for k in TOTALS if k in view}
        return quote

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "number": self.number,
            "deal_id": self.deal_id,
            "contact_id": self.contact_id,
            "currency": self.currency,
            "valid_until": self.valid_until,
            "locale": self.locale,
            "notes": self.notes,
            "lines": self.lines,
            **self.totals,
            "status": self.status,
            "sent_at": self.sent_at,
            "accepted_at": self.accepted_at,
            "rejected_at": self.rejected_at,
            "rejection_reason": self.rejection_reason,
            "expired_at": self.expired_at,
            "customer_data_erased_at": self.customer_data_erased_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


# --- customer value -----------------------------------------------------------------------


class Customer(Aggregate):
    """A contact as sales ranks it; its stream (id = the contact id) records tier changes."""

    aggregate_type = "customer"

    @dataclass(frozen=True, kw_only=True)
    class Clv:
        """A customer's historic lifetime value, in the reporting currency."""

        amount: str = spec(pattern=DECIMAL, description=MONEY)
        currency: str = spec(enum=CURRENCIES)

    class CustomerTierChanged(DomainEvent):
        """A customer's tier moved (strategic: the top 20% by historic CLV); the subject is the contact id."""

        contact_id: str = spec(minLength=1)
        tier: str = spec(enum=TIERS)
        previous_tier: str = spec(enum=TIERS)
        clv: Customer.Clv

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.tier = "standard"

    def set_tier(self, tier: str, clv: str, currency: str) -> bool:
        if tier == self.tier:
            return False
        self.record(
            self.CustomerTierChanged(
                contact_id=self.id, tier=tier, previous_tier=self.tier, clv=self.Clv(amount=clv, currency=currency)
            )
        )
        return True

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a customer's tier."""

    @apply.register(CustomerTierChanged)
    def _on_tier_changed(self, event: CustomerTierChanged) -> None:
        self.tier = event.tier

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "tier": self.tier}


# What sales writes about a person, sealed with the record's key (crmkit.shredding), which erasure of
# the record's contact destroys: the fields its events declare personal=True (titles, subjects,
# notes, outcomes, line texts, reasons).
PERSONAL_DATA = personal_fields(Deal, Activity, Quote)
