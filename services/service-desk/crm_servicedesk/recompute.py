"""Recompute: re-fold tickets' SLA clocks against their policy's versions as they are now.

After a policy or its calendar changes (`SlaPolicyRevised`, possibly effective in the
past), each affected ticket gets `SlaRecomputed` with the versions it now follows, and
the breaches that follow from them are recorded at their due time
(`Ticket.follow_policy`). Two callers:

- the worker's job (`app.sla_recomputer`): whenever a policy's version moved since its
  last finished run, every open ticket (those not yet solved);
- `crm sla recompute [--from DATE] [--to DATE]`: the open tickets, and the solved and
  closed ones opened in [from, to) (the period a report would show).

Both walk the tickets read model in batches (keyset on the ticket id: one event-store
read and one bulk append per batch, `Repository.change_many`) and checkpoint after each
in `sla_recomputes` (one document per caller: `worker`, `cli`), so a run that is killed
resumes where it stopped when started again with the same parameters. Idempotent: a
ticket already following its policy's versions is left alone, so a second run records
nothing.

`SlaRecompute` is the job on any event store: it reads the tickets and the policies'
versions through the desk's `views.DeskViews` and keeps its run state in a `RunStates`,
so the use-case tests run it on the in-memory store. `Recompute` is it wired to a
process's runtime (MongoDB, the run state in `sla_recomputes`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from pymongo.collection import Collection

from crm_servicedesk.commands import TicketDesk, TicketUseCases
from crm_servicedesk.domain import ACTIVE, SlaPolicy, Ticket
from crm_servicedesk.views import PolicyTickets
from crmkit import clock
from crmkit.events import Metadata, epoch_ms, parse_time

BATCH = 200
SYSTEM = Metadata(actor="system:sla-recompute")
PHASES = ("open", "closed")


class RunStates(Protocol):
    """Where a recompute keeps each caller's run: its parameters, phase, cursor and counts."""

    def get(self, run_id: str) -> dict[str, Any]:
        """The run's last saved state ({} when it never ran)."""
        ...

    def put(self, state: dict[str, Any]) -> None:
        """Save a run's state (`_id` = the run id) in place of the last."""
        ...


class MongoRunStates:
    """`RunStates` as one document per run id in a collection (`sla_recomputes`)."""

    def __init__(self, collection: Collection[dict[str, Any]]) -> None:
        self.collection = collection

    def get(self, run_id: str) -> dict[str, Any]:
        return self.collection.find_one({"_id": run_id}) or {}

    def put(self, state: dict[str, Any]) -> None:
        self.collection.replace_one({"_id": state["_id"]}, state, upsert=True)


class SlaRecompute:
    """The recompute on any event store, the desk's views and any `RunStates`."""

    def __init__(self, desk: TicketUseCases, runs: RunStates, batch: int = BATCH) -> None:
        self.desk = desk
        self.batch = batch
        self.runs = runs

    def policy_marks(self) -> dict[str, int]:
        """Each policy's version, from the read model: what the worker compares with its last run."""
        return self.desk.views.policy_versions()

    def up_to_date(self, run_id: str, marks: dict[str, int]) -> bool:
        """Whether `run_id`'s last run finished with these policy versions."""
        state = self.runs.get(run_id)
        return state.get("state") == "done" and state.get("params", {}).get("policies") == marks

    def selection(self, phase: str, since: datetime | None, until: datetime | None) -> PolicyTickets | None:
        """The tickets of a phase: open ones; solved and closed ones opened in [since, until) (None: none)."""
        if phase == "open":
            return PolicyTickets(tuple(ACTIVE))
        if since is None:
            return None
        return PolicyTickets(("solved", "closed"), epoch_ms(since), epoch_ms(until) if until is not None else None)

    def total(self, since: datetime | None, until: datetime | None) -> int:
        selections = [s for phase in PHASES if (s := self.selection(phase, since, until)) is not None]
        return sum(self.desk.views.count_policy_tickets(s) for s in selections)

    def run(
        self,
        run_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        marks: dict[str, int] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, int]:
        """Recompute the tickets of both phases in batches; resumes `run_id`'s unfinished run with the same
        parameters. Returns the tickets looked at (`tickets`) and those that got `SlaRecomputed` (`changed`)."""
        params = {
            "from_ms": epoch_ms(since) if since else None,
            "to_ms": epoch_ms(until) if until else None,
            "policies": marks if marks is not None else self.policy_marks(),
        }
        state = self.runs.get(run_id)
        if state.get("state") != "running" or state.get("params") != params:
            state = {
                "_id": run_id,
                "state": "running",
                "params": params,
                "phase": PHASES[0],
                "cursor": "",
                "tickets": 0,
                "changed": 0,
                "started_ms": epoch_ms(clock.now()),
            }
            self.runs.put(state)
        policies = self.desk.policy_aggregates()
        now = clock.now()
        for phase in PHASES[PHASES.index(state["phase"]) :]:
            which = self.selection(phase, since, until)
            while which is not None:
                ids = self.desk.views.policy_ticket_ids(which, state["cursor"], self.batch)
                if ids:
                    decided = self.desk.tickets.change_many(ids, lambda t: follow(t, policies, now), SYSTEM)
                    state.update(
                        phase=phase,
                        cursor=ids[-1],
                        tickets=state["tickets"] + len(ids),
                        changed=state["changed"] + sum(decided.values()),
                    )
                    self.runs.put(state)  # the checkpoint
                    if progress is not None:
                        progress(state["tickets"])
                if len(ids) < self.batch:
                    break
            state.update(cursor="")
        state.update(state="done", finished_ms=epoch_ms(clock.now()))
        self.runs.put(state)
        return {"tickets": state["tickets"], "changed": state["changed"]}


class Recompute(SlaRecompute):
    """The recompute on a process's runtime: the desk's MongoDB views, the run state in `sla_recomputes`."""

    def __init__(self, desk: TicketDesk, batch: int = BATCH) -> None:
        super().__init__(desk, MongoRunStates(desk.runtime.db["sla_recomputes"]), batch)


def follow(ticket: Ticket, policies: dict[str, SlaPolicy], now: datetime) -> bool:
    """One ticket's decision: follow its policy's versions from its opening on."""
    policy = policies.get((ticket.policy or {}).get("id") or "")
    if policy is None:
        return False
    return ticket.follow_policy(policy.timeline_from(parse_time(ticket.opened_at)), now)
