"""Provider webhooks: calls from an outside provider that hold no bearer token, authenticated by a
secret shared with that provider in a header (messaging's delivery receipts, `X-Receipt-Secret`;
the service desk's inbound SMS, `X-Inbound-Secret`).

The secret is the one configured (each webhook's own variable; set it, and give the provider the
same value) or, when none is, derived from the link secret (`CRM_LINK_SECRET`) and the webhook's
label, so every process of a service agrees on it without a setting (tests compute it the same
way). The comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import request

from crmkit.keys import link_secret
from crmkit.web.endpoint import Unauthorized


def shared_secret(configured: str, label: str) -> str:
    """The webhook's secret: `configured`, else derived from the link secret for `label`."""
    return configured or hmac.new(link_secret().encode(), label.encode(), hashlib.sha256).hexdigest()


def require_secret(header: str, secret: str) -> None:
    """Unauthorized (401) unless this request's `header` holds `secret`."""
    given = request.headers.get(header, "")
    if not given or not hmac.compare_digest(given.encode("utf-8", "replace"), secret.encode()):
        raise Unauthorized(f"a valid {header} header is required")


def secret_header(header: str, variable: str) -> dict[str, Any]:
    """The OpenAPI parameter and 401 of a webhook authenticated by `header` (configured by `variable`)."""
    return {
        "parameters": [
            {
                "in": "header",
                "name": header,
                "required": True,
                "schema": {"type": "string"},
                "description": f"the secret shared with the provider ({variable})",
            }
        ],
        "responses": {
            "401": {
                "description": f"{header} missing or wrong",
                "content": {"application/problem+json": {"schema": "Problem"}},
            }
        },
    }
