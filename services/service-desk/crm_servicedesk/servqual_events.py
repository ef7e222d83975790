"""SERVQUAL's events, for the service desk's catalogue (`catalogue.EVENTS`): meaning, JSON Schema, example.

No personal data: the answers are scores, the survey names its contact by id. An instrument
event's subject is `servqual-instrument`, a policy event's `servqual-policy`, a survey
event's the survey id.
"""

from __future__ import annotations

from typing import Any

from crm_servicedesk.servqual import DIMENSIONS, ITEMS, ITEMS_OF, LIKERT, TRIGGERS
from crmkit.catalogue import EventType

ID = {"type": "string", "minLength": 1}
OPTIONAL_TEXT = {"type": ["string", "null"]}
TIME = {"type": "string", "format": "date-time"}
ITEM_ID = {"enum": sorted(ITEMS, key=lambda item: int(item[1:]))}
SCORE = {"type": "integer", "minimum": LIKERT[0], "maximum": LIKERT[1]}
GAP = {"type": ["number", "null"], "minimum": -6, "maximum": 6}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


ITEMS_ASKED = _object(list(DIMENSIONS), {d: {"type": "array", "items": {"enum": list(ITEMS_OF[d])}, "uniqueItems": True}
                                         for d in DIMENSIONS})
WEIGHTS = {**_object(list(DIMENSIONS), {d: {"type": "number", "minimum": 0, "maximum": 1} for d in DIMENSIONS}),
           "description": "each dimension's share of the overall gap, fractions summing to 1"}
PER_DIMENSION = _object(list(DIMENSIONS), {d: GAP for d in DIMENSIONS})
MEANS = _object(list(DIMENSIONS), {d: {"type": ["number", "null"], "minimum": LIKERT[0], "maximum": LIKERT[1]}
                                   for d in DIMENSIONS})
SCORES = {"type": "object", "propertyNames": ITEM_ID, "additionalProperties": SCORE}
TRIGGER = {"type": "object", "required": ["rule"], "additionalProperties": False, "properties": {
    "rule": {"enum": list(TRIGGERS)}, "scope": {"enum": ["contact", "overall"]}, "n": {"type": "integer", "minimum": 1},
    "period": {"type": "string", "pattern": "^[0-9]{4}-Q[1-4]$"}, "tier": OPTIONAL_TEXT},
    "description": "what sent it: every_nth_solved (scope, n), quarterly (period, tier) or manual (staff)"}
EXAMPLE_ITEMS = {"tangibles": ["q1", "q2"], "reliability": ["q5", "q7"], "responsiveness": ["q11"],
                 "assurance": ["q14"], "empathy": ["q18"]}
EXAMPLE_WEIGHTS = {"tangibles": 0.1, "reliability": 0.3, "responsiveness": 0.25, "assurance": 0.2, "empathy": 0.15}

EVENT_TYPES = [
    EventType(
        "ServqualInstrumentConfigured", 1, "servqual_instrument",
        "An admin set what SERVQUAL surveys ask from now on: the standard items per dimension (q1–q22 of "
        "Parasuraman, Zeithaml & Berry 1988; a dimension with none is not asked) and the dimensions' weights "
        "in the overall gap. Surveys already sent keep what they were sent with. The subject is "
        "`servqual-instrument`.",
        _object(["items", "weights"], {"items": ITEMS_ASKED, "weights": WEIGHTS}),
        {"items": EXAMPLE_ITEMS, "weights": EXAMPLE_WEIGHTS},
    ),
    EventType(
        "ServqualPolicyConfigured", 1, "servqual_policy",
        "An admin set when the desk sends SERVQUAL surveys by itself: a contact's every Nth solved ticket, every "
        "Nth ticket solved overall, once a quarter to the contacts of some customer tiers; `counting_since`: "
        "solved tickets are counted from then on. The subject is `servqual-policy`.",
        _object(["enabled", "every_nth_solved_per_contact", "every_nth_solved_overall", "quarterly_tiers",
                 "counting_since", "at"], {
            "enabled": {"type": "boolean"},
            "every_nth_solved_per_contact": {"type": ["integer", "null"], "minimum": 1},
            "every_nth_solved_overall": {"type": ["integer", "null"], "minimum": 1},
            "quarterly_tiers": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "counting_since": TIME, "at": TIME}),
        {"enabled": True, "every_nth_solved_per_contact": 5, "every_nth_solved_overall": None,
         "quarterly_tiers": ["strategic"], "counting_since": "2026-12-01T08:00:00.000Z",
         "at": "2026-12-01T08:00:00.000Z"},
    ),
    EventType(
        "ServqualSurveySent", 1, "servqual_survey",
        "A SERVQUAL survey was sent to `contact_id`: messaging's default trigger emails them its signed link "
        "(the service desk's /v1/surveys/servqual/<token>). It keeps the instrument as it was (`items`, "
        "`weights`, `instrument_version`), what sent it (`trigger`), the ticket it follows (if any), the agent "
        "group that served the contact and their customer tier then. The subject is the survey id.",
        _object(["survey_id", "contact_id", "trigger", "ticket_id", "group", "customer_tier", "instrument_version",
                 "items", "weights", "sent_at"], {
            "survey_id": ID, "contact_id": ID, "trigger": TRIGGER, "ticket_id": {**ID, "type": ["string", "null"]},
            "group": OPTIONAL_TEXT, "customer_tier": OPTIONAL_TEXT,
            "instrument_version": {"type": "integer", "minimum": 0, "description": "0: the standard instrument"},
            "items": ITEMS_ASKED, "weights": WEIGHTS, "sent_at": TIME}),
        {"survey_id": "5f0c…", "contact_id": "01a2…", "trigger": {"rule": "every_nth_solved", "scope": "contact",
                                                                  "n": 5},
         "ticket_id": "01c2…", "group": "billing", "customer_tier": "strategic", "instrument_version": 2,
         "items": EXAMPLE_ITEMS, "weights": EXAMPLE_WEIGHTS, "sent_at": "2026-12-01T09:00:00.000Z"},
    ),
    EventType(
        "ServqualResponseRecorded", 1, "servqual_survey",
        "The contact answered the survey (once): every statement's expectation and perception (1–7), each item's "
        "gap (perception − expectation), each dimension's mean gap, expectation and perception (null: not "
        "asked), and the overall gap (Σ weight × dimension gap, with the survey's weights).",
        _object(["survey_id", "contact_id", "expectations", "perceptions", "item_gaps", "dimension_gaps",
                 "overall_gap", "dimension_expectations", "dimension_perceptions", "answered_at"], {
            "survey_id": ID, "contact_id": ID, "expectations": SCORES, "perceptions": SCORES,
            "item_gaps": {"type": "object", "propertyNames": ITEM_ID,
                          "additionalProperties": {"type": "integer", "minimum": -6, "maximum": 6}},
            "dimension_gaps": PER_DIMENSION, "overall_gap": GAP, "dimension_expectations": MEANS,
            "dimension_perceptions": MEANS, "answered_at": TIME}),
        {"survey_id": "5f0c…", "contact_id": "01a2…", "expectations": {"q1": 6, "q5": 7},
         "perceptions": {"q1": 5, "q5": 4}, "item_gaps": {"q1": -1, "q5": -3},
         "dimension_gaps": {"tangibles": -1.0, "reliability": -3.0, "responsiveness": None, "assurance": None,
                            "empathy": None},
         "overall_gap": -2.0,
         "dimension_expectations": {"tangibles": 6.0, "reliability": 7.0, "responsiveness": None, "assurance": None,
                                    "empathy": None},
         "dimension_perceptions": {"tangibles": 5.0, "reliability": 4.0, "responsiveness": None, "assurance": None,
                                   "empathy": None},
         "answered_at": "2026-12-02T10:00:00.000Z"},
    ),
]
