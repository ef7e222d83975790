"""The server side of `ExportContactRecords`, which sales, the service desk and messaging each
serve so that contacts can answer a person's data subject access request
(`GET /v1/contacts/{id}/export`) with one call per service.

What is common to the three: the request's ids, checked the same way, and the answer, one
JSON document in `records_json` (why JSON and not typed messages: the protos say).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from crmkit.rpc import require_all
from crmkit.web.responses import jsonable

MAX_CONTACT_IDS = 2000  # the person and the records merged into it (contacts caps those at 1000)
MAX_ID_LENGTH = 128


def requested_ids(contact_ids: Sequence[str]) -> list[str]:
    """The request's contact ids, each once, in order; INVALID_ARGUMENT naming every bad one."""
    ids = list(dict.fromkeys(contact_ids))
    require_all(
        (0 < len(ids) <= MAX_CONTACT_IDS, "contact_ids", f"1 to {MAX_CONTACT_IDS} contact ids are required"),
        *(
            (
                0 < len(cid.strip()) <= MAX_ID_LENGTH,
                f"contact_ids[{n}]",
                f"a contact id is 1 to {MAX_ID_LENGTH} characters",
            )
            for n, cid in enumerate(ids)
        ),
    )
    return ids


def records_json(records: Mapping[str, list[dict[str, Any]]]) -> str:
    """The records as the JSON text `records_json` carries (times as RFC 3339, text as is)."""
    return json.dumps(jsonable(dict(records)), ensure_ascii=False, separators=(",", ":"))
