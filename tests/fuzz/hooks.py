"""Schemathesis hooks for the fuzz run (loaded through SCHEMATHESIS_HOOKS by test_fuzz_apis.py).

Random ids almost always name nothing, so without help every request that names a contact,
deal or ticket stops at "unknown contact" or 404 and the code behind it is never reached.
These hooks let Hypothesis choose, for each id it generates (a path parameter, a query
parameter or a top-level body field named like `contact_id`), between the generated value
and the ids of records the test created first (CRM_FUZZ_KNOWN_IDS, JSON `{name: [ids]}`).
The choice is Hypothesis's, so the fixed seed still decides the whole run, and shrinking
still works. Values that are not strings (the negative cases) are left alone.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

KNOWN: dict[str, list[str]] = json.loads(os.environ.get("CRM_FUZZ_KNOWN_IDS", "{}"))


def _known_or_generated(name: str, value: Any) -> st.SearchStrategy[Any]:
    ids = KNOWN.get(name)
    if not ids or not isinstance(value, str):
        return st.just(value)
    return st.sampled_from([value, *ids])


def _with_known_ids(values: Any) -> st.SearchStrategy[Any]:
    if not isinstance(values, dict) or not any(name in KNOWN for name in values):
        return st.just(values)
    return st.fixed_dictionaries({name: _known_or_generated(name, value) for name, value in values.items()})


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
    return _with_known_ids(path_parameters)


@schemathesis.hook
def flatmap_query(context: Any, query: Any) -> st.SearchStrategy[Any]:
    return _with_known_ids(query)


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    return _with_known_ids(body)
