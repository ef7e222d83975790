"""REST edge for insight reports: GET /v1/insights/<report> (role contacts:read).

Every report takes `from`/`to` (RFC 3339; default: the 30 days up to now) and
`segment_id` (count only the segment's members, as its rules select them now). The
facts come from the insight read models (crm_contacts.insights.projections); the figures
are computed by crm_contacts.insights.figures. Definitions: docs/insights.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from crm_contacts.insights import figures as insights
from crm_contacts.insights.projections import InsightFacts
from crm_contacts.segments.commands import SegmentBook
from crmkit import clock
from crmkit.errors import NotFound, ValidationFailed
from crmkit.events import epoch_ms, rfc3339
from crmkit.runtime import Runtime
from crmkit.web import endpoint
from crmkit.web.pagination import DEFAULT_LIMIT, ID, MAX_LIMIT
from crmkit.web.periods import check_period

DEFAULT_DAYS = 30


class InsightQuery(Schema):
    """The period and the segment every insight report is filtered by."""

    class Meta:
        unknown = RAISE

    start = fields.AwareDateTime(
        data_key="from",
        metadata={
            "description": f"RFC 3339: the period's first moment (inclusive); default `to` minus {DEFAULT_DAYS} days"
        },
    )
    end = fields.AwareDateTime(
        data_key="to", metadata={"description": "RFC 3339: the period's end (exclusive); default now"}
    )
    segment_id = fields.String(
        validate=validate.Regexp(ID, error="not a segment id"),
        metadata={"description": "count only this segment's members (its rules evaluated now)"},
    )

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_: Any) -> None:
        start, end = data.get("start"), data.get("end")
        if start is not None and end is not None and end <= start:
            raise ValidationError({"from": ["must be before `to`"], "to": ["must be after `from`"]})
        check_period(start, end)


class SegmentSalesQuery(InsightQuery):
    limit = fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(1, MAX_LIMIT),
        metadata={"description": "segments per page (without segment_id)"},
    )
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))


class PeriodView(Schema):
    from_ = fields.String(data_key="from")
    to = fields.String()


class _Report(Schema):
    report = fields.String()
    period = fields.Nested(PeriodView)
    segment_id = fields.String(allow_none=True)


class ChurnReport(_Report):
    customers_at_start = fields.Integer()
    churned = fields.Integer()
    retained = fields.Integer()
    churned_and_not_back = fields.Integer()
    lost_otherwise = fields.Integer()
    churn_rate = fields.Float(allow_none=True)
    retention_rate = fields.Float(allow_none=True)


class WinBackReport(_Report):
    win_backs = fields.Integer()
    contacts_won_back = fields.Integer()
    by_cause = fields.Dict(keys=fields.String(), values=fields.Integer())


class RevenueSplit(Schema):
    new_customer_revenue = fields.String()
    returning_customer_revenue = fields.String()
    total_revenue = fields.String()


class AcquisitionReport(_Report):
    new_customers = fields.Integer()
    returning_customers = fields.Integer()
    deals_won_new = fields.Integer()
    deals_won_returning = fields.Integer()
    by_currency = fields.Dict(keys=fields.String(), values=fields.Nested(RevenueSplit))


class ContactsPerSaleReport(_Report):
    contacts_created = fields.Integer()
    deals_won = fields.Integer()
    contacts_per_sale = fields.Float(allow_none=True)


class SalesFigures(Schema):
    deals_won = fields.Integer()
    customers = fields.Integer()
    revenue = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "won revenue per currency, decimal strings"},
    )


class SegmentSales(SalesFigures):
    segment_id = fields.String()
    name = fields.String()


class SalesBySegmentReport(_Report):
    items = fields.List(fields.Nested(SegmentSales))
    next_cursor = fields.String(allow_none=True)


class SalesByStageReport(_Report):
    stages = fields.Dict(keys=fields.String(), values=fields.Nested(SalesFigures))


class ComplaintReport(_Report):
    complaints = fields.Integer()
    complaints_from_customers = fields.Integer()
    tickets_opened = fields.Integer()
    customers = fields.Integer()
    complaints_per_100_customers = fields.Float(allow_none=True)
    complaint_share_of_tickets = fields.Float(allow_none=True)


class NpsView(Schema):
    responses = fields.Integer()
    promoters = fields.Integer()
    passives = fields.Integer()
    detractors = fields.Integer()
    score = fields.Float(allow_none=True)


class TierSatisfaction(Schema):
    ratings = fields.Integer()
    csat_average = fields.Float(allow_none=True)
    csat_satisfied_percent = fields.Float(allow_none=True)
    nps = fields.Nested(NpsView)


class SatisfactionReport(_Report):
    tiers = fields.Dict(keys=fields.String(), values=fields.Nested(TierSatisfaction))


class Insights:
    """Loads a report's facts for a period and segment, and lets crm_contacts.insights.figures count."""

    def __init__(self, runtime: Runtime, segments: SegmentBook) -> None:
        self.facts = InsightFacts(runtime.db)
        self.segments = segments

    def scope(self, query: dict[str, Any]) -> tuple[insights.Period, set[str] | None, dict[str, Any]]:
        end: datetime = query.get("end") or clock.now()
        start: datetime = query.get("start") or end - timedelta(days=DEFAULT_DAYS)
        if end <= start:  # only `from` given, and it is in the future
            raise ValidationFailed("the period is empty", {"from": ["must be before `to` (default: now)"]})
        period = insights.Period(epoch_ms(start), epoch_ms(end))
        segment_id = query.get("segment_id")
        members = self.members(segment_id) if segment_id else None
        head = {"period": {"from": rfc3339(start), "to": rfc3339(end)}, "segment_id": segment_id}
        return period, members, head

    def members(self, segment_id: str) -> set[str]:
        try:
            return self.segments.member_ids(segment_id)
        except NotFound:
            raise ValidationFailed("unknown segment", {"segment_id": ["no segment with this id"]}) from None

    def churn(self, period: insights.Period, members: set[str] | None) -> dict[str, Any]:
        return insights.churn_and_retention(self.facts.customer_timelines(period, members), period)

    def win_backs(self, period: insights.Period, members: set[str] | None) -> dict[str, Any]:
        return insights.win_backs(self.facts.customer_timelines(period, members), period)

    def acquisition(self, period: insights.Period, members: set[str] | None) -> dict[str, Any]:
        return insights.acquisition_vs_retention(self.facts.won_deals(period, members), period)

    def contacts_per_sale(self, period: insights.Period, members: set[str] | None) -> dict[str, Any]:
        return insights.contacts_per_sale(
            self.facts.created_timelines(period, members), self.facts.won_deals(period, members), period
        )

    def sales_by_stage(self, period: insights.Period, members: set[str] | None) -> dict[str, Any]:
        deals = self.facts.won_deals(period, members)
        stages = self.facts.current_stages(d.contact_id for d in deals if d.won_in(period))
        by_stage = insights.sales_by(deals, period, lambda cid: stages.get(cid or "", insights.NO_CONTACT_STAGE))
        return {"stages": by_stage}

    def sales_by_segment(self, period: insights.Period, query: dict[str, Any]) -> dict[str, Any]:
        if query.get("segment_id"):
            segment = self.segments.segment(query["segment_id"])
            chosen, cursor = [{"id": segment.id, "name": segment.view()["name"]}], None
        else:
            chosen, cursor = self.segments.list_segments({"limit": query["limit"], "cursor": query.get("cursor")})
        memberships = {doc["id"]: self.members(doc["id"]) for doc in chosen}
        deals = [d for d in self.facts.won_deals(period, set().union(*memberships.values())) if d.won_in(period)]
        items = [
            {
                "segment_id": doc["id"],
                "name": doc.get("name"),
                **insights.sales_summary([d for d in deals if d.contact_id in memberships[doc["id"]]], period),
            }
            for doc in chosen
        ]
        return {"items": items, "next_cursor": cursor}

    def complaint_rate(self, period: insights.Period, members: set[str] | None) -> dict[str, Any]:
        customers = insights.customers_at_end(
            self.facts.customer_timelines(period, members), self.facts.won_deals_before_end(period, members), period
        )
        return insights.complaint_rate(self.facts.tickets_opened(period, members), customers, period)

    def satisfaction_by_tier(self, period: insights.Period, members: set[str] | None) -> dict[str, Any]:
        tickets = self.facts.tickets_rated(period, members)
        tiers = self.facts.tier_history(t.contact_id for t in tickets)
        return {"tiers": insights.satisfaction_by_tier(tickets, tiers, period)}


def blueprint(runtime: Runtime, segments: SegmentBook) -> Blueprint:
    bp = Blueprint("insights", __name__)
    book = Insights(runtime, segments)

    def report(
        name: str, figures: Callable[[insights.Period, set[str] | None], dict[str, Any]], query: dict[str, Any]
    ) -> Response:
        period, members, head = book.scope(query)
        return jsonify({"report": name, **head, **figures(period, members)})

    @bp.get("/v1/insights/churn")
    @endpoint("read", query=InsightQuery, response=ChurnReport)
    def churn(query: dict[str, Any]) -> Response:
        """Churn and retention rates of the customers the period starts with."""
        return report("churn", book.churn, query)

    @bp.get("/v1/insights/win-backs")
    @endpoint("read", query=InsightQuery, response=WinBackReport)
    def win_backs(query: dict[str, Any]) -> Response:
        """Win-backs: lifecycle changes from churned back to customer in the period, by cause."""
        return report("win-backs", book.win_backs, query)

    @bp.get("/v1/insights/acquisition-retention")
    @endpoint("read", query=InsightQuery, response=AcquisitionReport)
    def acquisition_retention(query: dict[str, Any]) -> Response:
        """Acquisition vs. retention: new customers' and returning customers' won revenue, per currency."""
        return report("acquisition-retention", book.acquisition, query)

    @bp.get("/v1/insights/contacts-per-sale")
    @endpoint("read", query=InsightQuery, response=ContactsPerSaleReport)
    def contacts_per_sale(query: dict[str, Any]) -> Response:
        """Contacts created per deal won in the period."""
        return report("contacts-per-sale", book.contacts_per_sale, query)

    @bp.get("/v1/insights/sales-by-segment")
    @endpoint("read", query=SegmentSalesQuery, response=SalesBySegmentReport)
    def sales_by_segment(query: dict[str, Any]) -> Response:
        """Won deals and revenue per currency for each segment's members (or one, with segment_id)."""
        period, _, head = book.scope(query)
        return jsonify({"report": "sales-by-segment", **head, **book.sales_by_segment(period, query)})

    @bp.get("/v1/insights/sales-by-stage")
    @endpoint("read", query=InsightQuery, response=SalesByStageReport)
    def sales_by_stage(query: dict[str, Any]) -> Response:
        """Won deals and revenue per currency by the contact's current lifecycle stage."""
        return report("sales-by-stage", book.sales_by_stage, query)

    @bp.get("/v1/insights/complaint-rate")
    @endpoint("read", query=InsightQuery, response=ComplaintReport)
    def complaint_rate(query: dict[str, Any]) -> Response:
        """Complaint tickets opened in the period per 100 customers."""
        return report("complaint-rate", book.complaint_rate, query)

    @bp.get("/v1/insights/satisfaction-by-tier")
    @endpoint("read", query=InsightQuery, response=SatisfactionReport)
    def satisfaction_by_tier(query: dict[str, Any]) -> Response:
        """CSAT and NPS of the ratings given in the period, by the customer's tier at the time."""
        return report("satisfaction-by-tier", book.satisfaction_by_tier, query)

    return bp
