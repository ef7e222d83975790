"""REST edge of every service: the app factory and the `endpoint` declaration."""

from crmkit.web.app import create_app
from crmkit.web.endpoint import (
    AsOfQuery,
    HistoryQuery,
    PageQuery,
    endpoint,
    if_match,
    metadata,
    optional_body,
    team_scope,
)
from crmkit.web.pagination import page
from crmkit.web.responses import jsonable, listing, resource

__all__ = [
    "AsOfQuery",
    "HistoryQuery",
    "PageQuery",
    "create_app",
    "endpoint",
    "if_match",
    "jsonable",
    "listing",
    "metadata",
    "optional_body",
    "page",
    "resource",
    "team_scope",
]
