"""What a service does when another service records an event: one table per service.

Each service lists its reactions in its own `reactions.py` (crm_<svc>/reactions.py): for
each event type of another service, what this service does about it and the code that
does it. The worker builds its cross-service projections from that table, so the table
is not documentation beside the code but the wiring itself, and a reader finds every
reaction of a service in one file.

A reaction's handler is one of two kinds, each keeping the guarantees it had:
- a contact's merge, unmerge or erasure (`ContactMerged`, `ContactUnmerged`,
  `ContactErased` of `contacts`): a hook of the service's local copy of contacts
  (`crmkit.directory.LocalContacts`: `Reactions.contact_hooks()` are its `on_merged`,
  `on_unmerged`, `on_erased`), which follows merge chains, runs each hook at least once
  and records it as done only after it succeeded;
- anything else: the projection that applies those events (`crmkit.projector.Projection`,
  with its own dedupe: by stream version, or an applied-set), run by the worker in its
  own consumer group like any projection (`Reactions.projections()`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, cast

if TYPE_CHECKING:
    from crmkit.projector import Projection

CONTACTS = "contacts"
# a contact event a local copy of contacts reacts to → the LocalContacts hook that does it
CONTACT_HOOKS = {"ContactMerged": "on_merged", "ContactUnmerged": "on_unmerged", "ContactErased": "on_erased"}
ANY_EVENT = "*"  # a reaction to whichever event types its projection is configured for (messaging's triggers)


class ContactHooks(TypedDict, total=False):
    """The hooks of `crmkit.directory.LocalContacts`, as keyword arguments."""

    on_merged: Callable[[str, str, str | None], Any]
    on_unmerged: Callable[[str, str, str | None], Any]
    on_erased: Callable[[str], Any]


@dataclass(frozen=True)
class Reaction:
    """On `events` of the service `source`, this service `does` something, with `handler`."""

    source: str  # the other service, as in services/<name> ("service-desk")
    events: tuple[str, ...]  # its event types (short names, as in its catalogue), or (ANY_EVENT,)
    does: str  # what this service does about them, in words
    handler: Callable[..., Any] | Projection

    @property
    def hook(self) -> str | None:
        """The LocalContacts hook this reaction is (on_merged, ...), None for a projection."""
        if self.source == CONTACTS and len(self.events) == 1 and self.events[0] in CONTACT_HOOKS:
            return CONTACT_HOOKS[self.events[0]]
        return None


class Reactions:
    """A service's table of reactions (see the module's docstring)."""

    def __init__(self, service: str, *reactions: Reaction) -> None:
        self.service = service
        self.table: tuple[Reaction, ...] = reactions
        for reaction in reactions:
            if reaction.source == service:
                raise ValueError(f"{service} reacting to its own {reaction.events}: a projection, not a reaction")
            if reaction.hook is None and not _is_projection(reaction.handler):
                raise TypeError(
                    f"{reaction.source} {reaction.events}: the handler of a reaction that is not a "
                    f"contact hook ({', '.join(CONTACT_HOOKS)}) must be a projection"
                )
        hooks = [reaction.hook for reaction in reactions if reaction.hook is not None]
        if len(hooks) != len(set(hooks)):
            raise ValueError(f"{service}: a contact event has two hooks")

    def contact_hooks(self) -> ContactHooks:
        """The hooks of the service's local copy of contacts: `LocalContacts(..., **reactions.contact_hooks())`."""
        hooks = {reaction.hook: reaction.handler for reaction in self.table if reaction.hook is not None}
        # keys from CONTACT_HOOKS, handlers callables (a hook is not a projection): a TypedDict mypy
        # cannot build from keys it only knows as str
        return cast(ContactHooks, hooks)

    def projections(self) -> list[Projection]:
        """The projections that apply the other reactions, each once, in the table's order."""
        found: dict[int, Projection] = {}
        for reaction in self.table:
            if reaction.hook is None:
                found.setdefault(id(reaction.handler), reaction.handler)  # type: ignore[arg-type]
        return list(found.values())

    def to(self, source: str, event: str) -> list[Reaction]:
        """The reactions to `event` of `source` (a projection for whichever types: included)."""
        return [
            reaction
            for reaction in self.table
            if reaction.source == source and (event in reaction.events or ANY_EVENT in reaction.events)
        ]

    def rows(self) -> Sequence[tuple[str, str, str]]:
        """(source, event types, what is done): the table as a reader sees it."""
        return [(reaction.source, ", ".join(reaction.events), reaction.does) for reaction in self.table]


def _is_projection(handler: object) -> bool:
    return callable(getattr(handler, "handle", None)) and hasattr(handler, "topics") and hasattr(handler, "name")
