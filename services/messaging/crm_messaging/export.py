"""A person's messages with their consent proofs, for their data subject access request
(ExportContactRecords).

Found as erasure finds them, by messaging's own indexes by contact: the messages read model,
and the dispatcher's schedule (which holds a message from before its first event, so one
not yet projected is exported too); then folded from the event store, whose events are the
proof: each message with `consent_proof`, what GET /v1/messages/{id}/consent answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crm_messaging.commands import MessageDesk


def contact_records(desk: MessageDesk, contact_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """{"messages": [...]} of these contact ids, each as its REST GET shows it plus its consent
    proof, oldest first."""
    wanted, mine = {"$in": list(contact_ids)}, set(contact_ids)
    ids = {doc["_id"] for doc in desk.messages_view.find({"contact_id": wanted}, {"_id": 1})}
    ids |= {doc["_id"] for doc in desk.schedule.find({"contact_id": wanted, "kind": "message"}, {"_id": 1})}
    messages = [message for message in desk.messages.get_many(sorted(ids)).values() if message.contact_id in mine]
    views = [{**message.view(), "consent_proof": message.consent_proof()} for message in messages]
    return {"messages": sorted(views, key=lambda view: (str(view.get("queued_at") or ""), view["id"]))}
