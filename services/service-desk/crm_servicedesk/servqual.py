"""SERVQUAL: the instrument, the survey policy, a survey, and the gap arithmetic. Pure Python, no I/O.

SERVQUAL (Parasuraman, Zeithaml & Berry 1988) measures service quality as the gap between
what a customer expects of an excellent company in its field and what they perceive of
this one, on 22 statement pairs in five dimensions, each answered on a 7-point Likert
scale (1 = strongly disagree, 7 = strongly agree):

- gap of an item = perception − expectation (−6 … 6; below 0: the service falls short);
- gap of a dimension = the mean of its items' gaps (the respondent's own, then averaged
  over respondents in reports);
- overall gap = Σ weight × dimension gap, the weights (one per dimension) summing to 1.

`STANDARD_ITEMS` are the 22 items of the 1988 scale, in its order and dimensions (tangibles
1–4, reliability 5–9, responsiveness 10–13, assurance 14–17, empathy 18–22), each worded
positively as the authors' 1991 refinement does (the 1988 responsiveness and empathy
statements were worded negatively), in English and Persian. An admin may ask a shorter
set (`ServqualInstrument`: which items per dimension, and the dimensions' weights); every
survey keeps the items and weights it was sent with, so later changes never change what
an answer meant.

Each aggregate declares its events (crmkit.domainevents; the catalogue's entries follow from them,
servqual_events only adds examples). No personal data: the answers are scores, the survey names its
contact by id. An instrument event's subject is `servqual-instrument`, a policy event's
`servqual-policy`, a survey event's the survey id.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from crmkit.aggregate import Aggregate
from crmkit.domainevents import DomainEvent, spec
from crmkit.errors import Conflict, ValidationFailed
from crmkit.events import rfc3339

DIMENSIONS = ("tangibles", "reliability", "responsiveness", "assurance", "empathy")
LIKERT = (1, 7)
INSTRUMENT_ID = "servqual-instrument"  # one instrument and one policy per desk: fixed stream ids
POLICY_ID = "servqual-policy"
WEIGHT_SCALES = (1, 100)  # weights are given as fractions of 1 or as percentages
GAP_DECIMALS = 4


@dataclass(frozen=True)
class Item:
    """One statement pair: what an excellent company does (expectation) and what this one does (perception)."""

    id: str
    dimension: str
    expectation: Mapping[str, str]  # by language: en, fa
    perception: Mapping[str, str]


def _item(number: int, dimension: str, en: tuple[str, str], fa: tuple[str, str]) -> Item:
    return Item(f"q{number}", dimension, {"en": en[0], "fa": fa[0]}, {"en": en[1], "fa": fa[1]})


STANDARD_ITEMS: tuple[Item, ...] = (
    _item(
        1,
        "tangibles",
        ("Excellent companies have up-to-date equipment.", "This company has up-to-date equipment."),
        ("شرکت‌های عالی تجهیزات به‌روز دارند.", "این شرکت تجهیزات به‌روز دارد."),
    ),
    _item(
        2,
        "tangibles",
        (
            "The physical facilities of excellent companies are visually appealing.",
            "This company's physical facilities are visually appealing.",
        ),
        (
            "امکانات و فضای فیزیکی شرکت‌های عالی از نظر ظاهری جذاب است.",
            "امکانات و فضای فیزیکی این شرکت از نظر ظاهری جذاب است.",
        ),
    ),
    _item(
        3,
        "tangibles",
        (
            "Employees of excellent companies are well dressed and neat.",
            "This company's employees are well dressed and neat.",
        ),
        ("کارکنان شرکت‌های عالی آراسته و مرتب‌اند.", "کارکنان این شرکت آراسته و مرتب‌اند."),
    ),
    _item(
        4,
        "tangibles",
        (
            "The appearance of an excellent company's facilities is in keeping with the type of service it provides.",
            "The appearance of this company's facilities is in keeping with the type of service it provides.",
        ),
        (
            "ظاهر امکانات شرکت‌های عالی با نوع خدماتی که ارائه می‌دهند هماهنگ است.",
            "ظاهر امکانات این شرکت با نوع خدماتی که ارائه می‌دهد هماهنگ است.",
        ),
    ),
    _item(
        5,
        "reliability",
        (
            "When excellent companies promise to do something by a certain time, they do so.",
            "When this company promises to do something by a certain time, it does so.",
        ),
        (
            "وقتی شرکت‌های عالی قول می‌دهند کاری را تا زمان مشخصی انجام دهند، به قولشان عمل می‌کنند.",
            "وقتی این شرکت قول می‌دهد کاری را تا زمان مشخصی انجام دهد، به قولش عمل می‌کند.",
        ),
    ),
    _item(
        6,
        "reliability",
        (
            "When a customer has a problem, excellent companies are sympathetic and reassuring.",
            "When you have a problem, this company is sympathetic and reassuring.",
        ),
        (
            "وقتی مشتری مشکلی دارد، شرکت‌های عالی همدلی می‌کنند و به او اطمینان خاطر می‌دهند.",
            "وقتی شما مشکلی دارید، این شرکت همدلی می‌کند و به شما اطمینان خاطر می‌دهد.",
        ),
    ),
    _item(
        7,
        "reliability",
        ("Excellent companies are dependable.", "This company is dependable."),
        ("شرکت‌های عالی قابل اتکا هستند.", "این شرکت قابل اتکا است."),
    ),
    _item(
        8,
        "reliability",
        (
            "Excellent companies provide their services at the time they promise to.",
            "This company provides its services at the time it promises to.",
        ),
        (
            "شرکت‌های عالی خدماتشان را در زمانی که قول داده‌اند ارائه می‌دهند.",
            "این شرکت خدماتش را در زمانی که قول داده است ارائه می‌دهد.",
        ),
    ),
    _item(
        9,
        "reliability",
        ("Excellent companies keep their records accurately.", "This company keeps its records accurately."),
        ("شرکت‌های عالی سوابق و اطلاعات را دقیق نگه می‌دارند.", "این شرکت سوابق و اطلاعات را دقیق نگه می‌دارد."),
    ),
    _item(
        10,
        "responsiveness",
        (
            "Excellent companies tell customers exactly when services will be performed.",
            "This company tells you exactly when services will be performed.",
        ),
        (
            "شرکت‌های عالی دقیقاً به مشتریان می‌گویند خدمات چه زمانی انجام می‌شود.",
            "این شرکت دقیقاً به شما می‌گوید خدمات چه زمانی انجام می‌شود.",
        ),
    ),
    _item(
        11,
        "responsiveness",
        (
            "Customers of excellent companies receive prompt service from their employees.",
            "You receive prompt service from this company's employees.",
        ),
        ("مشتریان شرکت‌های عالی از کارکنان آن‌ها خدمات فوری می‌گیرند.", "شما از کارکنان این شرکت خدمات فوری می‌گیرید."),
    ),
    _item(
        12,
        "responsiveness",
        (
            "Employees of excellent companies are always willing to help customers.",
            "This company's employees are always willing to help you.",
        ),
        ("کارکنان شرکت‌های عالی همیشه مایل‌اند به مشتریان کمک کنند.", "کارکنان این شرکت همیشه مایل‌اند به شما کمک کنند."),
    ),
    _item(
        13,
        "responsiveness",
        (
            "Employees of excellent companies are never too busy to respond to customers' requests promptly.",
            "This company's employees are never too busy to respond to your requests promptly.",
        ),
        (
            "کارکنان شرکت‌های عالی هیچ‌وقت آن‌قدر گرفتار نیستند که به درخواست مشتریان سریع پاسخ ندهند.",
            "کارکنان این شرکت هیچ‌وقت آن‌قدر گرفتار نیستند که به درخواست‌های شما سریع پاسخ ندهند.",
        ),
    ),
    _item(
        14,
        "assurance",
        ("Customers can trust the employees of excellent companies.", "You can trust this company's employees."),
        ("مشتریان می‌توانند به کارکنان شرکت‌های عالی اعتماد کنند.", "شما می‌توانید به کارکنان این شرکت اعتماد کنید."),
    ),
    _item(
        15,
        "assurance",
        (
            "Customers of excellent companies feel safe in their transactions with the employees.",
            "You feel safe in your transactions with this company's employees.",
        ),
        (
            "مشتریان شرکت‌های عالی در معاملاتشان با کارکنان احساس امنیت می‌کنند.",
            "شما در معاملاتتان با کارکنان این شرکت احساس امنیت می‌کنید.",
        ),
    ),
    _item(
        16,
        "assurance",
        ("Employees of excellent companies are polite.", "This company's employees are polite."),
        ("کارکنان شرکت‌های عالی مؤدب‌اند.", "کارکنان این شرکت مؤدب‌اند."),
    ),
    _item(
        17,
        "assurance",
        (
            "Employees of excellent companies get adequate support from their company to do their jobs well.",
            "This company's employees get adequate support from the company to do their jobs well.",
        ),
        (
            "کارکنان شرکت‌های عالی از سوی شرکتشان پشتیبانی کافی می‌گیرند تا کارشان را خوب انجام دهند.",
            "کارکنان این شرکت از سوی شرکت پشتیبانی کافی می‌گیرند تا کارشان را خوب انجام دهند.",
        ),
    ),
    _item(
        18,
        "empathy",
        (
            "Excellent companies give each customer individual attention.",
            "This company gives you individual attention.",
        ),
        ("شرکت‌های عالی به هر مشتری توجه فردی دارند.", "این شرکت به شما توجه فردی دارد."),
    ),
    _item(
        19,
        "empathy",
        (
            "Employees of excellent companies give customers personal attention.",
            "This company's employees give you personal attention.",
        ),
        ("کارکنان شرکت‌های عالی به مشتریان توجه شخصی نشان می‌دهند.", "کارکنان این شرکت به شما توجه شخصی نشان می‌دهند."),
    ),
    _item(
        20,
        "empathy",
        (
            "Employees of excellent companies know what their customers' needs are.",
            "This company's employees know what your needs are.",
        ),
        ("کارکنان شرکت‌های عالی می‌دانند نیازهای مشتریانشان چیست.", "کارکنان این شرکت می‌دانند نیازهای شما چیست."),
    ),
    _item(
        21,
        "empathy",
        (
            "Excellent companies have their customers' best interests at heart.",
            "This company has your best interests at heart.",
        ),
        ("شرکت‌های عالی به‌راستی خیر و صلاح مشتریانشان را می‌خواهند.", "این شرکت به‌راستی خیر و صلاح شما را می‌خواهد."),
    ),
    _item(
        22,
        "empathy",
        (
            "Excellent companies have operating hours convenient to all their customers.",
            "This company has operating hours convenient to all its customers.",
        ),
        ("ساعات کاری شرکت‌های عالی برای همهٔ مشتریانشان مناسب است.", "ساعات کاری این شرکت برای همهٔ مشتریانش مناسب است."),
    ),
)
ITEMS: dict[str, Item] = {item.id: item for item in STANDARD_ITEMS}
ITEMS_OF: dict[str, tuple[str, ...]] = {d: tuple(i.id for i in STANDARD_ITEMS if i.dimension == d) for d in DIMENSIONS}


def default_items() -> dict[str, list[str]]:
    """The whole standard scale: all 22 items."""
    return {dimension: list(ids) for dimension, ids in ITEMS_OF.items()}


def default_weights(items: Mapping[str, Sequence[str]] | None = None) -> dict[str, float]:
    """Equal weights over the dimensions that have items (the others weigh 0)."""
    measured = [d for d in DIMENSIONS if (items or default_items()).get(d)]
    return {d: (1 / len(measured) if d in measured else 0.0) for d in DIMENSIONS}


# --- the gap arithmetic ----------------------------------------------------------------------


def _rounded(value: Fraction | None) -> float | None:
    return None if value is None else round(float(value), GAP_DECIMALS)


def _mean(values: Sequence[Fraction | int]) -> Fraction | None:
    return Fraction(sum(values), len(values)) if values else None


def item_gaps(expectations: Mapping[str, int], perceptions: Mapping[str, int]) -> dict[str, int]:
    """Perception − expectation of every item answered on both sides."""
    return {item: perceptions[item] - expectations[item] for item in expectations if item in perceptions}


def dimension_gaps(gaps: Mapping[str, int], items: Mapping[str, Sequence[str]]) -> dict[str, Fraction | None]:
    """Each dimension's gap: the mean of its items' gaps (None: the dimension was not asked)."""
    return {d: _mean([gaps[i] for i in items.get(d) or () if i in gaps]) for d in DIMENSIONS}


def overall_gap(by_dimension: Mapping[str, Fraction | None], weights: Mapping[str, float]) -> Fraction | None:
    """Σ weight × dimension gap over the weighted dimensions, the weights taken as their share of the total
    (so fractions of 1 and percentages give the same answer); None when no weighted dimension was measured."""
    weighted = {d: Fraction(weights.get(d) or 0) for d in DIMENSIONS if weights.get(d)}
    measured = {d: gap for d in weighted if (gap := by_dimension.get(d)) is not None}
    if not weighted or len(measured) < len(weighted):
        return None
    total = sum(weighted.values(), Fraction(0))
    return sum(((w / total) * measured[d] for d, w in weighted.items()), Fraction(0))


def score(
    items: Mapping[str, Sequence[str]],
    weights: Mapping[str, float],
    expectations: Mapping[str, int],
    perceptions: Mapping[str, int],
) -> dict[str, Any]:
    """A response's gaps as recorded: per item, per dimension (mean of its items) and overall (weighted);
    also each dimension's mean expectation and perception. Rounded to 4 decimals."""
    gaps = item_gaps(expectations, perceptions)
    by_dimension = dimension_gaps(gaps, items)
    return {
        "item_gaps": gaps,
        "dimension_gaps": {d: _rounded(g) for d, g in by_dimension.items()},
        "overall_gap": _rounded(overall_gap(by_dimension, weights)),
        "dimension_expectations": {
            d: _rounded(_mean([expectations[i] for i in items.get(d) or () if i in expectations])) for d in DIMENSIONS
        },
        "dimension_perceptions": {
            d: _rounded(_mean([perceptions[i] for i in items.get(d) or () if i in perceptions])) for d in DIMENSIONS
        },
    }


# --- the instrument ----------------------------------------------------------------------------


def instrument_problems(
    items: Mapping[str, Sequence[str]], weights: Mapping[str, float] | None
) -> dict[str, list[str]]:
    """Every reason an instrument cannot be used, by field (empty: fine). The rules no OpenAPI document
    can state: the weights sum to 1 or to 100, and a weighted dimension has items to measure it."""
    problems: dict[str, list[str]] = {}
    for dimension, ids in items.items():
        foreign = [i for i in ids if i not in ITEMS_OF.get(dimension, ())]
        if foreign:
            problems[f"items.{dimension}"] = [f"not {dimension} items: {', '.join(foreign)}"]
        elif len(set(ids)) != len(ids):
            problems[f"items.{dimension}"] = ["an item is listed twice"]
    if not any(items.get(d) for d in DIMENSIONS):
        problems["items"] = ["ask at least one item"]
    if weights is None:
        return problems
    total = sum(weights.values())
    if not any(abs(total - scale) <= 1e-6 * scale for scale in WEIGHT_SCALES):
        problems["weights"] = [f"the weights must sum to 1 or to 100 (they sum to {round(total, 6)})"]
    for dimension in DIMENSIONS:
        if (weights.get(dimension) or 0) > 0 and not items.get(dimension):
            problems[f"weights.{dimension}"] = ["a weighted dimension needs at least one item"]
    return problems


def normalized(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights as fractions of 1, every dimension named: each its share of the total (so percentages and
    fractions that sum to 1 or 100 within rounding become the same shares, none above 1)."""
    total = sum(weights.values())
    return {d: round((weights.get(d) or 0) / total, 10) for d in DIMENSIONS}


# JSON shapes the events' type hints cannot say (plain JSON keyed by dimension or item)
TIME = {"format": "date-time"}  # spec(format="date-time"): an RFC 3339 string
ID = {"minLength": 1}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


ITEM_ID = {"enum": sorted(ITEMS, key=lambda item: int(item[1:]))}
SCORE = {"type": "integer", "minimum": LIKERT[0], "maximum": LIKERT[1]}
GAP = {"type": ["number", "null"], "minimum": -6, "maximum": 6}
ITEMS_ASKED = _object(
    list(DIMENSIONS),
    {d: {"type": "array", "items": {"enum": list(ITEMS_OF[d])}, "uniqueItems": True} for d in DIMENSIONS},
)
WEIGHTS = {
    **_object(list(DIMENSIONS), {d: {"type": "number", "minimum": 0, "maximum": 1} for d in DIMENSIONS}),
    "description": "each dimension's share of the overall gap, fractions summing to 1",
}
PER_DIMENSION = _object(list(DIMENSIONS), {d: GAP for d in DIMENSIONS})
MEANS = _object(
    list(DIMENSIONS), {d: {"type": ["number", "null"], "minimum": LIKERT[0], "maximum": LIKERT[1]} for d in DIMENSIONS}
)
SCORES = {"type": "object", "propertyNames": ITEM_ID, "additionalProperties": SCORE}


class ServqualInstrument(Aggregate):
    """What a SERVQUAL survey asks: the items per dimension and the dimensions' weights (one per desk)."""

    aggregate_type = "servqual_instrument"

    class ServqualInstrumentConfigured(DomainEvent):
        """An admin set what SERVQUAL surveys ask from now on: the standard items per dimension (q1–q22 of
        Parasuraman, Zeithaml & Berry 1988; a dimension with none is not asked) and the dimensions' weights
        in the overall gap. Surveys already sent keep what they were sent with. The subject is
        `servqual-instrument`."""

        items: dict[str, list[str]] = spec(schema=ITEMS_ASKED)
        weights: dict[str, float] = spec(schema=WEIGHTS)

    def __init__(self, aggregate_id: str = INSTRUMENT_ID) -> None:
        super().__init__(aggregate_id)
        self.items: dict[str, list[str]] = default_items()
        self.weights: dict[str, float] = default_weights()

    def configure(self, items: Mapping[str, Sequence[str]] | None, weights: Mapping[str, float] | None) -> bool:
        """Ask `items` (None: all 22) weighted by `weights` (None: equal over the asked dimensions).
        Records nothing when the instrument would stay as it is; ValidationFailed naming every problem."""
        chosen = {d: list((items or default_items()).get(d) or ()) for d in DIMENSIONS}
        problems = instrument_problems(chosen, weights)
        if problems:
            raise ValidationFailed("the instrument is not valid", problems)
        weighted = normalized(weights) if weights is not None else default_weights(chosen)
        if (chosen, weighted) == (self.items, self.weights):
            return False
        self.record(self.ServqualInstrumentConfigured(items=chosen, weights=weighted))
        return True

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes the instrument."""

    @apply.register(ServqualInstrumentConfigured)
    def _on_configured(self, event: ServqualInstrumentConfigured) -> None:
        self.items = {d: list((event.items or {}).get(d) or ()) for d in DIMENSIONS}
        self.weights = {d: float((event.weights or {}).get(d) or 0) for d in DIMENSIONS}

    def snapshot(self) -> dict[str, Any]:
        """What a survey keeps: the instrument's version, items and weights when it was sent."""
        return {
            "instrument_version": self.version,
            "items": {d: list(v) for d, v in self.items.items()},
            "weights": dict(self.weights),
        }

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "items": self.items,
            "weights": self.weights,
            "item_count": sum(len(ids) for ids in self.items.values()),
            "standard": self.version == 0 or self.items == default_items(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


# --- the policy: when a survey is sent ---------------------------------------------------------

POLICY_FIELDS = ("enabled", "every_nth_solved_per_contact", "every_nth_solved_overall", "quarterly_tiers")


class ServqualPolicy(Aggregate):
    """When the desk sends SERVQUAL surveys by itself (one per desk; off until an admin turns it on).

    - `every_nth_solved_per_contact`: N → a contact's every Nth solved ticket sends them one;
    - `every_nth_solved_overall`: N → every Nth ticket solved at the desk sends one to its contact;
    - `quarterly_tiers`: e.g. ["strategic"] → once each calendar quarter (UTC) to every contact of those tiers.
    Solved tickets are counted from `counting_since`: when a configuration last changed a counting rule, so
    turning a rule on never surveys the tickets solved before.
    """

    aggregate_type = "servqual_policy"

    class ServqualPolicyConfigured(DomainEvent):
        """An admin set when the desk sends SERVQUAL surveys by itself: a contact's every Nth solved ticket, every
        Nth ticket solved overall, once a quarter to the contacts of some customer tiers; `counting_since`:
        solved tickets are counted from then on. The subject is `servqual-policy`."""

        enabled: bool
        every_nth_solved_per_contact: int | None = spec(minimum=1)
        every_nth_solved_overall: int | None = spec(minimum=1)
        quarterly_tiers: list[str] = spec(items={"type": "string", "minLength": 1})
        counting_since: str = spec(format="date-time")
        at: str = spec(format="date-time")

    def __init__(self, aggregate_id: str = POLICY_ID) -> None:
        super().__init__(aggregate_id)
        self.enabled = False
        self.every_nth_solved_per_contact: int | None = None
        self.every_nth_solved_overall: int | None = None
        self.quarterly_tiers: list[str] = []
        self.counting_since: str | None = None

    def configure(self, fields: Mapping[str, Any], now: datetime) -> bool:
        """Replace the policy with `fields`; nothing is recorded when nothing changes."""
        wanted: dict[str, Any] = {
            "enabled": bool(fields.get("enabled")),
            "every_nth_solved_per_contact": fields.get("every_nth_solved_per_contact"),
            "every_nth_solved_overall": fields.get("every_nth_solved_overall"),
            "quarterly_tiers": sorted(set(fields.get("quarterly_tiers") or ())),
        }
        current = {name: getattr(self, name) for name in POLICY_FIELDS}
        if wanted == current:
            return False
        counting = ("enabled", "every_nth_solved_per_contact", "every_nth_solved_overall")
        restart = self.counting_since is None or any(wanted[n] != current[n] for n in counting)
        at = rfc3339(now)
        since = self.counting_since if self.counting_since is not None and not restart else at
        self.record(self.ServqualPolicyConfigured(**wanted, counting_since=since, at=at))
        return True

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes the policy."""

    @apply.register(ServqualPolicyConfigured)
    def _on_configured(self, event: ServqualPolicyConfigured) -> None:
        self.adopt(event)  # its rules and counting_since
        self.quarterly_tiers = list(self.quarterly_tiers or [])

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            **{name: getattr(self, name) for name in POLICY_FIELDS},
            "counting_since": self.counting_since,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


# --- a survey ---------------------------------------------------------------------------------

TRIGGERS = ("every_nth_solved", "quarterly", "manual")
RESULT = ("item_gaps", "dimension_gaps", "overall_gap", "dimension_expectations", "dimension_perceptions")
TRIGGER = {
    "type": "object",
    "required": ["rule"],
    "additionalProperties": False,
    "properties": {
        "rule": {"enum": list(TRIGGERS)},
        "scope": {"enum": ["contact", "overall"]},
        "n": {"type": "integer", "minimum": 1},
        "period": {"type": "string", "pattern": "^[0-9]{4}-Q[1-4]$"},
        "tier": {"type": ["string", "null"]},
    },
    "description": "what sent it: every_nth_solved (scope, n), quarterly (period, tier) or manual (staff)",
}


def answer_problems(
    items: Mapping[str, Sequence[str]], expectations: Mapping[str, Any], perceptions: Mapping[str, Any]
) -> dict[str, list[str]]:
    """Every item must be answered on both sides, each a whole number 1–7, and nothing else answered."""
    asked = [i for d in DIMENSIONS for i in items.get(d) or ()]
    low, high = LIKERT
    problems: dict[str, list[str]] = {}
    for side, answers in (("expectations", expectations), ("perceptions", perceptions)):
        for item in asked:
            value = answers.get(item)
            if value is None:
                problems[f"{side}.{item}"] = ["answer this statement (1 to 7)"]
            elif isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                problems[f"{side}.{item}"] = ["a whole number from 1 to 7"]
        for item in answers:
            if item not in asked:
                problems[f"{side}.{item}"] = ["not a statement of this survey"]
    return problems


class ServqualSurvey(Aggregate):
    """One SERVQUAL questionnaire sent to a contact, with the instrument as it was then; answered once."""

    aggregate_type = "servqual_survey"

    class ServqualSurveySent(DomainEvent):
        """A SERVQUAL survey was sent to `contact_id`: messaging's default trigger emails them its signed link
        (the service desk's /v1/surveys/servqual/<token>). It keeps the instrument as it was (`items`,
        `weights`, `instrument_version`), what sent it (`trigger`), the ticket it follows (if any), the agent
        group that served the contact and their customer tier then. The subject is the survey id."""

        survey_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        trigger: dict[str, Any] = spec(schema=TRIGGER)
        ticket_id: str | None = spec(minLength=1)
        group: str | None
        customer_tier: str | None
        instrument_version: int = spec(minimum=0, description="0: the standard instrument")
        items: dict[str, list[str]] = spec(schema=ITEMS_ASKED)
        weights: dict[str, float] = spec(schema=WEIGHTS)
        sent_at: str = spec(format="date-time")

    class ServqualResponseRecorded(DomainEvent):
        """The contact answered the survey (once): every statement's expectation and perception (1–7), each item's
        gap (perception − expectation), each dimension's mean gap, expectation and perception (null: not
        asked), and the overall gap (Σ weight × dimension gap, with the survey's weights)."""

        survey_id: str = spec(minLength=1)
        contact_id: str = spec(minLength=1)
        expectations: dict[str, int] = spec(schema=SCORES)
        perceptions: dict[str, int] = spec(schema=SCORES)
        item_gaps: dict[str, int] = spec(
            schema={
                "type": "object",
                "propertyNames": ITEM_ID,
                "additionalProperties": {"type": "integer", "minimum": -6, "maximum": 6},
            }
        )
        dimension_gaps: dict[str, float | None] = spec(schema=PER_DIMENSION)
        overall_gap: float | None = spec(minimum=-6, maximum=6)
        dimension_expectations: dict[str, float | None] = spec(schema=MEANS)
        dimension_perceptions: dict[str, float | None] = spec(schema=MEANS)
        answered_at: str = spec(format="date-time")

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.contact_id = ""
        self.trigger: dict[str, Any] = {}
        self.ticket_id: str | None = None
        self.group: str | None = None
        self.customer_tier: str | None = None
        self.instrument_version = 0
        self.items: dict[str, list[str]] = {}
        self.weights: dict[str, float] = {}
        self.sent_at: str | None = None
        self.answered_at: str | None = None
        self.expectations: dict[str, int] = {}
        self.perceptions: dict[str, int] = {}
        self.result: dict[str, Any] | None = None

    @classmethod
    def send(
        cls,
        survey_id: str,
        contact_id: str,
        instrument: Mapping[str, Any],
        trigger: Mapping[str, Any],
        context: Mapping[str, Any],
        now: datetime,
    ) -> ServqualSurvey:
        """A survey for `contact_id` (messaging emails its link); `context`: the ticket behind it, the agent
        group that served the contact and their customer tier, each may be None."""
        survey = cls(survey_id)
        survey.record(
            cls.ServqualSurveySent(
                survey_id=survey_id,
                contact_id=contact_id,
                trigger=dict(trigger),
                ticket_id=context.get("ticket_id"),
                group=context.get("group"),
                customer_tier=context.get("customer_tier"),
                **instrument,
                sent_at=rfc3339(now),
            )
        )
        return survey

    def answer(self, expectations: Mapping[str, Any], perceptions: Mapping[str, Any], now: datetime) -> None:
        """Record the answers once (again: 409); every item on both sides 1–7 or ValidationFailed naming each."""
        if self.answered_at is not None:
            raise Conflict("this survey has already been answered")
        problems = answer_problems(self.items, expectations, perceptions)
        if problems:
            raise ValidationFailed("the answers are not complete", problems)
        result = score(self.items, self.weights, expectations, perceptions)
        self.record(
            self.ServqualResponseRecorded(
                survey_id=self.id,
                contact_id=self.contact_id,
                expectations=dict(expectations),
                perceptions=dict(perceptions),
                **result,
                answered_at=rfc3339(now),
            )
        )

    @functools.singledispatchmethod
    def apply(self, event: DomainEvent) -> None:
        """Nothing else changes a survey."""

    @apply.register(ServqualSurveySent)
    def _on_sent(self, event: ServqualSurveySent) -> None:
        self.adopt(event)  # the contact, trigger, ticket, group, tier and the instrument as it was

    @apply.register(ServqualResponseRecorded)
    def _on_answered(self, event: ServqualResponseRecorded) -> None:
        self.expectations, self.perceptions = dict(event.expectations), dict(event.perceptions)
        self.answered_at = event.answered_at
        self.result = {k: getattr(event, k) for k in RESULT}

    @property
    def status(self) -> str:
        return "answered" if self.answered_at else "sent"

    def questions(self) -> list[Item]:
        """The survey's items in the scale's order."""
        return [ITEMS[i] for d in DIMENSIONS for i in self.items.get(d) or () if i in ITEMS]

    @classmethod
    def restore(cls, view: dict[str, Any]) -> ServqualSurvey:
        survey = cls(view["id"])
        for name in cls.state_names():
            if name in view:
                setattr(survey, name, copy.deepcopy(view[name]))
        if view.get("answered_at"):
            survey.result = {k: copy.deepcopy(view.get(k)) for k in RESULT}
        survey.version = view["version"]
        survey.created_at, survey.updated_at = view.get("created_at"), view.get("updated_at")
        return survey

    def view(self) -> dict[str, Any]:
        result = self.result or {}
        return {
            "id": self.id,
            "version": self.version,
            "status": self.status,
            **{name: getattr(self, name) for name in self.state_names() if name != "result"},
            **{name: result.get(name) for name in RESULT},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
