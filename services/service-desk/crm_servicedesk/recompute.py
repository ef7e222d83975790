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
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo import ASCENDING

from crm_servicedesk.commands import TicketDesk
from crm_servicedesk.domain import ACTIVE, SlaPolicy, Ticket
from crmkit import clock
from crmkit.events import Metadata, epoch_ms, parse_time

BATCH = 200
SYSTEM = Metadata(actor="system:sla-recompute")
PHASES = ("open", "closed")


class Recompute:
    def __init__(self, desk: TicketDesk, batch: int = BATCH) -> None:
        self.desk = desk
        self.batch = batch
        self.runs = desk.runtime.db["sla_recomputes"]

    def policy_marks(self) -> dict[str, int]:
        """Each policy's version, from the read model: what the worker compares with its last run."""
        return {doc["_id"]: doc["version"] for doc in self.desk.policies_view.find({}, {"version": 1})}

    def up_to_date(self, run_id: str, marks: dict[str, int]) -> bool:
        """Whether `run_id`'s last run finished with these policy versions."""
        state = self.runs.find_one({"_id": run_id}) or {}
        return state.get("state") == "done" and state.get("params", {}).get("policies") == marks

    def query(self, phase: str, since: datetime | None, until: datetime | None) -> dict[str, Any] | None:
        """The tickets of a phase: open ones; solved and closed ones opened in [since, until) (None: none)."""
        if phase == "open":
            return {"has_policy": True, "status": {"$in": list(ACTIVE)}}
        if since is None:
            return None
        opened: dict[str, int] = {"$gte": epoch_ms(since)}
        if until is not None:
            opened["$lt"] = epoch_ms(until)
        return {"has_policy": True, "status": {"$in": ["solved", "closed"]}, "opened_ms": opened}

    def total(self, since: datetime | None, until: datetime | None) -> int:
        queries = [q for phase in PHASES if (q := self.query(phase, since, until)) is not None]
        return sum(self.desk.tickets_view.count_documents(q) for q in queries)

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
        state = self.runs.find_one({"_id": run_id}) or {}
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
            self.runs.replace_one({"_id": run_id}, state, upsert=True)
        policies = self.desk.policy_aggregates()
        now = clock.now()
        for phase in PHASES[PHASES.index(state["phase"]) :]:
            query = self.query(phase, since, until)
            while query is not None:
                docs = list(
                    self.desk.tickets_view.find({**query, "_id": {"$gt": state["cursor"]}}, {"_id": 1})
                    .sort("_id", ASCENDING)
                    .limit(self.batch)
                )
                if docs:
                    ids = [doc["_id"] for doc in docs]
                    decided = self.desk.tickets.change_many(ids, lambda t: follow(t, policies, now), SYSTEM)
                    state.update(
                        phase=phase,
                        cursor=ids[-1],
                        tickets=state["tickets"] + len(ids),
                        changed=state["changed"] + sum(decided.values()),
                    )
                    self.runs.replace_one({"_id": run_id}, state, upsert=True)  # the checkpoint
                    if progress is not None:
                        progress(state["tickets"])
                if len(docs) < self.batch:
                    break
            state.update(cursor="")
        state.update(state="done", finished_ms=epoch_ms(clock.now()))
        self.runs.replace_one({"_id": run_id}, state, upsert=True)
        return {"tickets": state["tickets"], "changed": state["changed"]}


def follow(ticket: Ticket, policies: dict[str, SlaPolicy], now: datetime) -> bool:
    """One ticket's decision: follow its policy's versions from its opening on."""
    policy = policies.get((ticket.policy or {}).get("id") or "")
    if policy is None:
        return False
    return ticket.follow_policy(policy.timeline_from(parse_time(ticket.opened_at)), now)
