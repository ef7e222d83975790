"""Schemathesis hooks for the fuzz run (loaded through SCHEMATHESIS_HOOKS by test_fuzz_apis.py).

Random ids almost always name nothing, so without help every request that names a contact,
deal or ticket stops at "unknown contact" or 404 and the code behind it is never reached.
Likewise a random string is rarely a currency, a decimal amount or a phone number the API
accepts. These hooks let Hypothesis choose, for each such value it generates (a path or
query parameter, or a body field at any depth, by its name), between the generated value
and a few that are known to be good: the ids of records the test created first
(CRM_FUZZ_KNOWN_IDS, JSON `{name: [ids]}`) and the valid values below. The choice is
Hypothesis's, so the fixed seed still decides the whole run, and shrinking still works.
Values that are not strings (the wrong-type cases) are left alone.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

# times with no UTC equivalent: the schema's `date-time` format allows them, and they were 500s once
EDGE_TIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59Z"]
DECIMALS = ["1250.00", "0.01", "3"]
VALID: dict[str, list[str]] = {
    "currency": ["USD", "EUR", "JPY"], "amount": DECIMALS, "unit_price": DECIMALS, "quantity": DECIMALS,
    "tax_rate": ["9", "0"], "discount_percent": ["10"], "probability": ["50"],
    "due_at": ["2099-01-01T10:00:00+03:30", *EDGE_TIMES], "valid_until": ["2099-01-01"],
    "phone": ["+14155550123", "+989121234567"], "locale": ["fa-IR", "en"], "time_zone": ["Asia/Tehran"],
}
TIMES = {name: EDGE_TIMES for name in ("at", "as_of", "from", "to", "scheduled_at")}
KNOWN: dict[str, list[str]] = {**TIMES, **VALID, **json.loads(os.environ.get("CRM_FUZZ_KNOWN_IDS", "{}"))}


def _with_known_values(value: Any, name: str = "") -> st.SearchStrategy[Any]:
    """`value` as generated, or (for a string named in KNOWN) one of the known values; nested values likewise."""
    if isinstance(value, dict):
        return st.fixed_dictionaries({key: _with_known_values(item, key) for key, item in value.items()})
    if isinstance(value, list):
        return st.tuples(*(_with_known_values(item) for item in value)).map(list)
    if isinstance(value, str) and KNOWN.get(name):
        return st.sampled_from([value, *KNOWN[name]])
    return st.just(value)


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
    return _with_known_values(path_parameters)


@schemathesis.hook
def flatmap_query(context: Any, query: Any) -> st.SearchStrategy[Any]:
    return _with_known_values(query)


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    return _with_known_values(body)
