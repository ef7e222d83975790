"""SERVQUAL's events, for the service desk's catalogue (`catalogue.EVENTS`): an example of each.

Their meaning, JSON Schema and personal fields (none) come from the classes declared with the
aggregates in `servqual` (crmkit.domainevents).
"""

from __future__ import annotations

from crm_servicedesk.servqual import ServqualInstrument, ServqualPolicy, ServqualSurvey
from crmkit.catalogue import EventType

EXAMPLE_ITEMS = {
    "tangibles": ["q1", "q2"],
    "reliability": ["q5", "q7"],
    "responsiveness": ["q11"],
    "assurance": ["q14"],
    "empathy": ["q18"],
}
EXAMPLE_WEIGHTS = {"tangibles": 0.1, "reliability": 0.3, "responsiveness": 0.25, "assurance": 0.2, "empathy": 0.15}

EVENT_TYPES = [
    EventType.of(
        ServqualInstrument.ServqualInstrumentConfigured,
        {"items": EXAMPLE_ITEMS, "weights": EXAMPLE_WEIGHTS},
    ),
    EventType.of(
        ServqualPolicy.ServqualPolicyConfigured,
        {
            "enabled": True,
            "every_nth_solved_per_contact": 5,
            "every_nth_solved_overall": None,
            "quarterly_tiers": ["strategic"],
            "counting_since": "2026-12-01T08:00:00.000Z",
            "at": "2026-12-01T08:00:00.000Z",
        },
    ),
    EventType.of(
        ServqualSurvey.ServqualSurveySent,
        {
            "survey_id": "5f0c…",
            "contact_id": "01a2…",
            "trigger": {"rule": "every_nth_solved", "scope": "contact", "n": 5},
            "ticket_id": "01c2…",
            "group": "billing",
            "customer_tier": "strategic",
            "instrument_version": 2,
            "items": EXAMPLE_ITEMS,
            "weights": EXAMPLE_WEIGHTS,
            "sent_at": "2026-12-01T09:00:00.000Z",
        },
    ),
    EventType.of(
        ServqualSurvey.ServqualResponseRecorded,
        {
            "survey_id": "5f0c…",
            "contact_id": "01a2…",
            "expectations": {"q1": 6, "q5": 7},
            "perceptions": {"q1": 5, "q5": 4},
            "item_gaps": {"q1": -1, "q5": -3},
            "dimension_gaps": {
                "tangibles": -1.0,
                "reliability": -3.0,
                "responsiveness": None,
                "assurance": None,
                "empathy": None,
            },
            "overall_gap": -2.0,
            "dimension_expectations": {
                "tangibles": 6.0,
                "reliability": 7.0,
                "responsiveness": None,
                "assurance": None,
                "empathy": None,
            },
            "dimension_perceptions": {
                "tangibles": 5.0,
                "reliability": 4.0,
                "responsiveness": None,
                "assurance": None,
                "empathy": None,
            },
            "answered_at": "2026-12-02T10:00:00.000Z",
        },
    ),
]
