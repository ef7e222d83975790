"""Public holidays a business calendar can start from: the `holidays` package (python-holidays).

`{"holidays_from": {"country": "IR", "years": [2026, 2027]}}` on a policy or a revision
is expanded here, once, into explicit dates, and those dates are what the event stores.
So the package is consulted only when a person changes a calendar: a later release that
moves a lunar holiday (Iran's Islamic holidays follow the moon and are revised) never
changes a recorded calendar, a replay or a past ticket's due times. To take a new
release's dates, revise the calendar again.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache, lru_cache

import holidays

MIN_YEAR, MAX_YEAR = 1950, 2100  # what the package's countries cover well
MAX_YEARS = 10  # years expanded in one request


@cache
def countries() -> dict[str, tuple[str, ...]]:
    """ISO 3166-1 alpha-2 code → its subdivision codes, as the installed package supports them (the
    package also answers to alpha-3 codes: left out, one name per country)."""
    return {
        code: tuple(subdivisions)
        for code, subdivisions in holidays.list_supported_countries().items()
        if len(code) == 2
    }


def problems(country: str, years: Iterable[int], subdivision: str | None) -> dict[str, list[str]]:
    """What is wrong with a request, by field (`country`, `subdivision`, `years`); empty when fine."""
    found: dict[str, list[str]] = {}
    known = countries()
    if country not in known:
        found["country"] = ["not a country the holidays package covers (ISO 3166-1 alpha-2, e.g. IR)"]
    elif subdivision is not None and subdivision not in known[country]:
        some = ", ".join(known[country][:8]) or "none"
        found["subdivision"] = [f"not a subdivision of {country} (e.g. {some})"]
    if any(not MIN_YEAR <= year <= MAX_YEAR for year in years):
        found["years"] = [f"years from {MIN_YEAR} to {MAX_YEAR}"]
    return found


def expand(country: str, years: Iterable[int], subdivision: str | None = None) -> list[str]:
    """The public holidays of `country` (and `subdivision`) in `years`, as sorted ISO dates.

    Only the dates are kept; the names (in the package's language) are not part of a
    calendar. Call `problems` first: an unknown country raises NotImplementedError here.
    """
    return list(_expand(country, tuple(sorted(set(years))), subdivision))


@lru_cache(maxsize=64)  # a request is validated, then stored: expanded twice
def _expand(country: str, years: tuple[int, ...], subdivision: str | None) -> tuple[str, ...]:
    found = holidays.country_holidays(country, subdiv=subdivision, years=years)
    return tuple(sorted(day.isoformat() for day in found))
