"""Template rendering in a Jinja2 sandbox.

Templates are written by staff, not by trusted developers, so they run in an
`ImmutableSandboxedEnvironment` with no globals at all (no `range`, `cycler`, `joiner`,
`namespace`, `lipsum`, `dict`): a template sees only the variables we pass. On top of
the sandbox's run-time checks, a template that names a private or dunder attribute
(`x.__class__`, `x['_secret']`, `x|attr('__init__')`) is rejected when it is saved, so
nothing that probes Python internals is ever stored. Output is plain text: HTML escaping
would mangle SMS text; right-to-left text passes through byte for byte.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_OUTPUT = 100_000  # characters a rendered part may have


class TemplateRejected(ValueError):
    """A template that does not compile or reaches for something private."""


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(autoescape=False, undefined=ChainableUndefined, keep_trailing_newline=True)
    env.globals.clear()  # no cycler, joiner, namespace, range, lipsum, dict
    env.filters.pop("attr", None)  # attribute access by computed name
    return env


ENV = _environment()


def check(source: str) -> None:
    """Compile `source`; raise TemplateRejected for bad syntax or any private name."""
    try:
        tree = ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateRejected(f"line {exc.lineno}: {exc.message}") from None
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name, nodes.Filter)):
        name = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value if isinstance(node.arg.value, str) else None
        elif isinstance(node, nodes.Name):
            name = node.name
        elif isinstance(node, nodes.Filter) and node.name not in ENV.filters:
            raise TemplateRejected(f"unknown filter {node.name!r}")
        if isinstance(name, str) and name.startswith("_"):
            raise TemplateRejected(f"{name!r}: private names are not available in templates")
    try:
        ENV.from_string(source)
    except TemplateSyntaxError as exc:  # e.g. an unknown filter or test found at compile time
        raise TemplateRejected(f"line {exc.lineno}: {exc.message}") from None


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> Any:
    check(source)  # also at render time: a template stored before a rule was added is checked too
    return ENV.from_string(source)


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Render with the sandbox; anything unsafe or broken is a TemplateRejected."""
    try:
        text = _compiled(source).render(**_plain(variables))
    except SecurityError as exc:
        raise TemplateRejected(f"unsafe template: {exc}") from None
    except TemplateError as exc:
        raise TemplateRejected(f"template failed: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateRejected(f"template failed: {exc.__class__.__name__}") from None
    return text[:MAX_OUTPUT]


def _plain(value: Any) -> Any:
    """Only JSON-like data goes in: no objects whose methods a template could call."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
