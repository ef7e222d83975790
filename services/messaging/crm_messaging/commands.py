"""The messaging service's use cases: the REST and gRPC edges and the worker call these.

`MessageDesk` queues messages (and schedules them for the dispatcher), answers queries,
records receipts, runs the campaign and trigger commands, handles unsubscribes and
scrubs a contact's messages when the contact is erased.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError

from crm_messaging import reactions, reports, templates, unsubscribe
from crm_messaging.config import MessagingConfig
from crm_messaging.config import current as current_config
from crm_messaging.domain import CHANNELS, Campaign, Message, Template, Trigger, subject_problem
from crm_messaging.projections import CampaignsView, MessagesView, TemplatesView, TriggersView
from crm_messaging.suppressions import Suppressions, suppression_id
from crmkit import clock as platform_clock
from crmkit.directory import ContactDirectory, LocalContacts
from crmkit.erasure import drop_stored_responses
from crmkit.errors import NotFound, Unavailable, ValidationFailed
from crmkit.events import Metadata, epoch_ms, new_id, rfc3339
from crmkit.keys import link_secret
from crmkit.repository import Repository
from crmkit.runtime import Runtime
from crmkit.web.pagination import page
from crmkit.web.webhooks import shared_secret

NAMESPACE = uuid.UUID("6f1d3c1e-6b0a-4f4e-9a57-2f0c1f6c2a11")


def derived_id(*parts: str) -> str:
    """A message id fixed by what caused it (campaign+contact, trigger+event): queuing twice is a no-op."""
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))


class MessageDesk:
    def __init__(self, runtime: Runtime, config: MessagingConfig | None = None,
                 directory: ContactDirectory | None = None,
                 clock: Callable[[], datetime] = platform_clock.now) -> None:
        self.runtime = runtime
        self.config = config or current_config()
        self.clock = clock
        self._directory = directory
        db = runtime.db
        self.messages: Repository[Message] = Repository(runtime.store, Message, runtime.publish)
        self.templates: Repository[Template] = Repository(runtime.store, Template, runtime.publish)
        self.campaigns: Repository[Campaign] = Repository(runtime.store, Campaign, runtime.publish)
        self.triggers: Repository[Trigger] = Repository(runtime.store, Trigger, runtime.publish)
        self.schedule = db["schedule"]  # what the dispatcher works on: messages and campaigns, due times, leases
        self.messages_view = db["messages"]
        self.templates_view = db["templates"]
        self.campaigns_view = db["campaigns"]
        self.triggers_view = db["triggers"]
        self.trigger_register = db["trigger_ids"]  # every trigger id, written before its first event
        self.suppressions = Suppressions(runtime.store, runtime.publish)  # bounced and complained addresses
        self.contacts = LocalContacts("contacts", db["contacts"], self.directory, service="messaging",  # reactions.py
                                      **reactions.contact_hooks(self))

    @property
    def directory(self) -> ContactDirectory:
        if self._directory is None:
            self._directory = ContactDirectory()
        return self._directory

    def read_models(self) -> list[Any]:
        store, topic, db = self.runtime.store, self.runtime.settings.topic, self.runtime.db
        return [MessagesView("messages", db["messages"], store, topic),
                TemplatesView("templates", db["templates"], store, topic),
                CampaignsView("campaigns", db["campaigns"], store, topic),
                TriggersView("triggers", db["triggers"], store, topic)]

    def ensure_indexes(self) -> None:
        self.schedule.create_index([("state", ASCENDING), ("due_ms", ASCENDING)])
        self.schedule.create_index([("contact_id", ASCENDING)])
        self.schedule.create_index([("campaign_id", ASCENDING), ("state", ASCENDING)])
        self.schedule.create_index([("provider_message_id", ASCENDING)])
        self.contacts.ensure_indexes()
        for model in self.read_models():
            model.ensure_indexes()

    def now(self) -> datetime:
        return self.clock()

    # --- templates ----------------------------------------------------------------------

    def define_template(self, fields: dict[str, Any], meta: Metadata, template_id: str | None = None) -> Template:
        _check_variants(fields["variants"], self.config.render_limits)
        if fields["default_locale"] not in fields["variants"]:
            raise ValidationFailed("default_locale needs a variant", {"default_locale": ["has no variant"]})
        template = Template.define(template_id or new_id(), fields)
        self.templates.save(template, meta)
        return template

    def update_template(self, template_id: str, fields: dict[str, Any], meta: Metadata,
                        if_match: int | None) -> Template:
        if "variants" in fields:
            _check_variants(fields["variants"], self.config.render_limits)

        def decide(template: Template) -> None:
            variants = fields.get("variants", template.variants)
            if fields.get("default_locale", template.default_locale) not in variants:
                raise ValidationFailed("default_locale needs a variant", {"default_locale": ["has no variant"]})
            template.update(fields)

        return self.templates.change(template_id, decide, meta, if_match)

    def template(self, template_id: str) -> Template:
        return self.templates.get(template_id)

    def list_templates(self, query: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        filters = {"channel": query["channel"]} if query.get("channel") else {}
        return page(self.templates_view, filters, query["limit"], query.get("cursor"))

    def preview(self, template_id: str | None, source: dict[str, Any] | None, locale: str | None,
                variables: dict[str, Any], contact_id: str | None) -> dict[str, Any]:
        """Render without sending: a saved template (or unsaved text) with sample or a contact's data,
        under the same caps as a send (a cap broken is a 422 naming it, under `subject` or `body`)."""
        if template_id:
            chosen, variant = self.template(template_id).variant(locale)
        else:
            _check_variants({"preview": source or {}}, self.config.render_limits)
            chosen, variant = locale or "", source or {}
        context = {**(self.contact_variables(contact_id) if contact_id else {}), **variables}
        rendered: dict[str, str | None] = {}
        for part in templates.PARTS:
            try:
                rendered[part] = templates.render(variant[part], context, self.config.render_limits, part) \
                    if variant.get(part) else None
            except templates.CapExceeded as exc:
                raise ValidationFailed(str(exc), {part: [str(exc)]}) from None
            except templates.TemplateRejected as exc:
                raise ValidationFailed(str(exc), {"template": [str(exc)]}) from None
        subject, body = rendered["subject"], rendered["body"]
        if subject and (problem := subject_problem(subject)):  # a variable brought a line break in
            raise ValidationFailed("the rendered subject is not one line", {"subject": [f"as rendered, {problem}"]})
        return {"locale": chosen, "subject": subject, "body": body}

    # --- messages -----------------------------------------------------------------------

    def queue_message(self, fields: dict[str, Any], meta: Metadata, message_id: str | None = None) -> Message:
        if fields.get("template_id"):
            template = self.template_for(fields["template_id"], fields["channel"])
            fields = {"category": template.category, **fields}
        elif not fields.get("body"):
            raise ValidationFailed("a template_id or a body is required",
                                   {"body": ["required without template_id"]})
        else:
            _check_variants({"message": {"subject": fields.get("subject"), "body": fields["body"]}},
                            self.config.render_limits)
        self.require_contact(fields["contact_id"])
        message = Message.queue(message_id or new_id(), fields, rfc3339(self.now()))
        self.schedule_messages([message])
        self.messages.save(message, meta)
        return message

    def queue_many(self, messages: Sequence[Message], meta_of: Callable[[Message], Metadata]) -> set[str]:
        """Queue messages decided in bulk (a campaign's members, triggered events): one schedule
        insert, one append. Returns the ids queued before (derived ids: a repeat), left as they are.
        Each id may appear once: a second new stream with the same id would take the first down."""
        if not messages:
            return set()
        if len({m.id for m in messages}) != len(messages):
            raise ValueError("queue_many needs distinct message ids")
        self.schedule_messages(messages)
        return self.messages.save_many(messages, meta_of)

    def template_for(self, template_id: str, channel: str) -> Template:
        """The template a message, campaign or trigger names: a 422 when unknown or for another channel."""
        try:
            template = self.template(template_id)
        except NotFound:
            raise ValidationFailed("unknown template", {"template_id": ["no such template"]}) from None
        if template.channel != channel:
            raise ValidationFailed("the template is for another channel",
                                   {"template_id": [f"is a {template.channel} template"]})
        return template

    def require_contact(self, contact_id: str) -> None:
        if contact_id not in self.known_contacts([contact_id]):
            raise ValidationFailed("unknown contact", {"contact_id": ["no such contact"]})

    def known_contacts(self, contact_ids: Sequence[str]) -> set[str]:
        """Which of these contacts exist. Unavailable when contacts is down."""
        return set(self._contacts_many(contact_ids))

    def _contacts_many(self, contact_ids: Sequence[str], tolerate_outage: bool = False) -> dict[str, dict[str, Any]]:
        """Contacts by id: the local copies (one query), then one gRPC call for the rest,
        remembered so the next look is local. With `tolerate_outage`, contacts being down
        leaves the misses out instead of raising."""
        found = self.contacts.find(contact_ids)
        missing = [cid for cid in dict.fromkeys(contact_ids) if cid not in found]
        if missing:
            try:
                fetched = self.directory.many(missing)
            except (NotFound, Unavailable):
                if not tolerate_outage:
                    raise
                return found
            self.contacts.remember_many(list(fetched.values()))
            found.update(fetched)
        return found

    def schedule_messages(self, messages: Sequence[Message]) -> None:
        """Schedule entries go in before the messages' first events: a process that dies in
        between leaves an entry the dispatcher waits on a while (`UNBORN_GRACE`), never a
        queued message nobody sends. An entry that exists already (a repeat) stays as it is.
        A new message is due at once (`due_ms` 0), whatever this process's clock says: a clock
        moved back (drills, tests) must not park it until the old "now" comes round again."""
        now = epoch_ms(self.now())
        entries = [{"_id": m.id, "kind": "message", "state": "pending", "due_ms": 0, "lease_ms": 0,
                    "created_ms": now, "contact_id": m.contact_id, "channel": m.channel,
                    "campaign_id": m.campaign_id} for m in messages]
        try:
            self.schedule.insert_many(entries, ordered=False)
        except BulkWriteError as exc:
            if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
                raise

    def message(self, message_id: str) -> Message:
        return self.messages.get(message_id)

    def message_consent(self, message_id: str) -> dict[str, Any]:
        """The consent decision the message's send or suppression relied on (None while it
        waits, or when none was asked), from its own events: the proof, not the read model."""
        return self.messages.get(message_id).consent_proof()

    def consent_report(self, start: date, end: date) -> dict[str, Any]:
        return reports.consent_proofs(self.messages_view, start, end)

    def list_messages(self, query: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        filters = {key: query[key] for key in ("contact_id", "campaign_id", "status", "channel") if query.get(key)}
        return page(self.messages_view, filters, query["limit"], query.get("cursor"), {"queued_ms": 0, "consent": 0})

    def contact_messages(self, contact_id: str, limit: int,
                         after: tuple[int, str] | None = None) -> list[dict[str, Any]]:
        """A contact's messages newest first (queued_ms, then id, both descending), from just
        past `after`, the (queued_ms, id) of the last one a previous page showed: keyset paging
        never skips or repeats a message as new ones arrive."""
        query: dict[str, Any] = {"contact_id": contact_id}
        if after is not None:
            queued_ms, last_id = after
            query = {"$and": [query, {"$or": [{"queued_ms": {"$lt": queued_ms}},
                                              {"queued_ms": queued_ms, "_id": {"$lt": last_id}}]}]}
        cursor = self.messages_view.find(query).sort([("queued_ms", -1), ("_id", -1)])
        return list(cursor.limit(limit))

    def contact_variables(self, contact_id: str) -> dict[str, Any]:
        """What templates may use about the contact (from the local copy, gRPC on a miss)."""
        return self.contact_variables_many([contact_id])[contact_id]

    def contact_variables_many(self, contact_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """`contact_variables` for a send batch: one local query, one gRPC call for the misses
        (contacts down: render with what is known)."""
        found = self._contacts_many(contact_ids, tolerate_outage=True)
        return {cid: _variables(cid, found.get(cid) or {}) for cid in contact_ids}

    # --- receipts -----------------------------------------------------------------------

    def receipt_secret(self) -> str:
        return shared_secret(self.config.receipt_secret, "crm-messaging-receipts")

    def receipt(self, provider: str, body: dict[str, Any], meta: Metadata) -> Message:
        message_id = body.get("message_id")
        if not message_id:
            entry = self.schedule.find_one({"provider_message_id": body["provider_message_id"],
                                            "provider": provider})
            if entry is None:
                raise NotFound(f"no message sent through {provider} as {body['provider_message_id']}")
            message_id = entry["_id"]
        at = rfc3339(body.get("at") or self.now())

        def decide(message: Message) -> None:
            if message.provider is not None and message.provider != provider:
                raise NotFound(f"message {message.id} was not sent through {provider}")
            if body["status"] == "delivered":
                message.delivered(at)
            elif body["status"] != "complained":  # a complaint changes nothing about the delivery
                message.bounced(body.get("reason") or body["status"], at)

        message = self.messages.change(message_id, decide, meta)
        if body["status"] in ("bounced", "complained"):  # never again to this address (suppressions.py)
            self.suppressions.suppress(message, body["status"], body.get("reason"), "receipt", meta, at)
        return message

    # --- campaigns ----------------------------------------------------------------------

    def create_campaign(self, fields: dict[str, Any], meta: Metadata) -> Campaign:
        self.template_for(fields["template_id"], fields["channel"])
        campaign = Campaign.create(new_id(), fields)
        self.campaigns.save(campaign, meta)
        return campaign

    def launch_campaign(self, campaign_id: str, scheduled_at: datetime | None, meta: Metadata,
                        if_match: int | None) -> Campaign:
        now = self.now()
        when = scheduled_at if scheduled_at and scheduled_at > now else now
        campaign = self.campaigns.change(
            campaign_id, lambda c: c.launch(rfc3339(when), rfc3339(now)), meta, if_match)
        with contextlib.suppress(DuplicateKeyError):
            self.schedule.insert_one({"_id": f"campaign:{campaign_id}", "kind": "campaign", "state": "pending",
                                      "due_ms": epoch_ms(when), "lease_ms": 0, "campaign_id": campaign_id})
        return campaign

    def campaign_action(self, campaign_id: str, action: str, meta: Metadata, if_match: int | None) -> Campaign:
        return self.campaigns.change(campaign_id, lambda c: getattr(c, action)(), meta, if_match)

    def campaign(self, campaign_id: str) -> dict[str, Any]:
        campaign = self.campaigns.get(campaign_id)
        return {**campaign.view(), "stats": self.campaign_stats(campaign_id, campaign.targeted)}

    def campaign_stats(self, campaign_id: str, targeted: int | None) -> dict[str, Any]:
        counts = {row["_id"]: row["n"] for row in self.messages_view.aggregate([
            {"$match": {"campaign_id": campaign_id}}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}])}
        stats = {status: counts.get(status, 0) for status in ("queued", "suppressed", "sent", "delivered", "failed")}
        stats["failed"] += counts.get("bounced", 0)
        stats["sent"] += stats["delivered"]  # delivered messages were sent
        stats["targeted"] = targeted or 0
        done = stats["suppressed"] + stats["sent"] + stats["failed"]
        stats["progress"] = round(done / targeted, 4) if targeted else 0.0
        return stats

    def list_campaigns(self, query: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        filters = {"status": query["status"]} if query.get("status") else {}
        return page(self.campaigns_view, filters, query["limit"], query.get("cursor"))

    def expand_campaign(self, campaign: Campaign, meta: Metadata) -> int:
        """Queue one message per segment member, in bulk; safe to repeat (ids are derived)."""
        count = 0
        batch: list[dict[str, Any]] = []
        queued_at = rfc3339(self.now())
        for member in self.directory.segment_members(campaign.segment_id):
            batch.append(member)
            if len(batch) >= 500:
                count += self._queue_members(campaign, batch, queued_at, meta)
                batch = []
        if batch:
            count += self._queue_members(campaign, batch, queued_at, meta)
        return count

    def _queue_members(self, campaign: Campaign, members: list[dict[str, Any]], queued_at: str,
                       meta: Metadata) -> int:
        self.contacts.remember_many([{**member, "id": member["contact_id"]} for member in members])
        self.queue_many([Message.queue(derived_id("campaign", campaign.id, member["contact_id"]), {
            "contact_id": member["contact_id"], "channel": campaign.channel, "template_id": campaign.template_id,
            "campaign_id": campaign.id, "category": "marketing"}, queued_at) for member in members], lambda _: meta)
        return len(members)

    # --- triggers -----------------------------------------------------------------------

    def define_trigger(self, fields: dict[str, Any], meta: Metadata, trigger_id: str | None = None) -> Trigger:
        self.template_for(fields["template_id"], fields["channel"])
        trigger = Trigger.define(trigger_id or new_id(), fields)
        self.register_trigger(trigger.id)
        self.triggers.save(trigger, meta)
        return trigger

    def register_trigger(self, trigger_id: str) -> None:
        """Note the id in `trigger_ids` before the trigger's first event, so the reactor finds
        every trigger with one small read (an id whose append failed is skipped there)."""
        with contextlib.suppress(DuplicateKeyError):
            self.trigger_register.insert_one({"_id": trigger_id})

    def trigger_ids(self) -> list[str]:
        return [doc["_id"] for doc in self.trigger_register.find({}, {"_id": 1})]

    def set_trigger_enabled(self, trigger_id: str, enabled: bool, meta: Metadata, if_match: int | None) -> Trigger:
        return self.triggers.change(trigger_id, lambda t: t.set_enabled(enabled), meta, if_match)

    def list_triggers(self, query: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        return page(self.triggers_view, {}, query["limit"], query.get("cursor"))

    # --- unsubscribe and erasure --------------------------------------------------------

    def unsubscribe_url(self, contact_id: str, channel: str) -> str:
        return f"{self.config.public_url}/v1/unsubscribe/{unsubscribe.sign(link_secret(), contact_id, channel)}"

    def unsubscribe_link(self, token: str) -> tuple[str, str]:
        """(contact id, channel) of an unsubscribe link we signed; NotFound for any other."""
        try:
            contact_id, channel = unsubscribe.verify(link_secret(), token)
        except unsubscribe.BadToken:
            raise NotFound("this unsubscribe link is not valid") from None
        if channel not in CHANNELS:
            raise NotFound("this unsubscribe link is not valid")
        return contact_id, channel

    def unsubscribe(self, token: str) -> tuple[str, str]:
        """Withdraw consent for the token's contact and channel (in contacts, over gRPC); a
        repeat records the same withdrawal again, harmlessly. (contact id, channel)."""
        contact_id, channel = self.unsubscribe_link(token)
        with contextlib.suppress(NotFound):  # the person is gone (erased): nothing more will be sent anyway
            self.directory.record_consent(contact_id, channel, "withdrawn", "unsubscribe_link")
        return contact_id, channel

    def contact_merged(self, duplicate_id: str, survivor_id: str, merge_id: str | None) -> None:
        """ContactMerged: the duplicate's messages now show on the survivor (its 360, its list);
        each move names the merge (`merge_id`, and the envelope's causation id) for an unmerge."""
        def move(message: Message) -> None:
            if message.contact_id == duplicate_id:
                message.change_contact(survivor_id, "contact_merged", merge_id)

        self.messages.change_many(self._messages_of(duplicate_id), move,
                                  Metadata(actor="system:contact-merge", causation_id=merge_id))

    def contact_unmerged(self, duplicate_id: str, survivor_id: str, merge_id: str | None) -> None:
        """ContactUnmerged: the messages that merge moved, and nothing moved since, are the
        duplicate's again. Safe to repeat."""
        self.messages.change_many(self._messages_of(duplicate_id),
                                  lambda message: message.move_back(duplicate_id, survivor_id, merge_id),
                                  Metadata(actor="system:contact-unmerge", causation_id=merge_id))

    def _messages_of(self, contact_id: str) -> list[str]:
        """Messages that are or were the contact's: from the event store (`references`, so one the
        read model has not folded yet is found) and the read model (messages stored before)."""
        found = {stream for stream, _ in self.runtime.store.streams_referring([contact_id], [Message.aggregate_type])}
        found |= {doc["_id"] for doc in self.messages_view.find({"contact_id": contact_id}, {"_id": 1})}
        return sorted(found)

    def erase_contact(self, contact_id: str) -> None:
        """ContactErased: the contact's message bodies, addresses and variables become unreadable
        (their messages' keys are deleted) and stored responses about them are dropped."""
        ids = {doc["_id"] for doc in self.messages_view.find({"contact_id": contact_id}, {"_id": 1})}
        ids |= {doc["_id"] for doc in self.schedule.find({"contact_id": contact_id, "kind": "message"}, {"_id": 1})}
        # their suppressed addresses too: the streams exist or not, forgetting a key never made is harmless
        self.runtime.vault.forget_many(ids | {suppression_id(contact_id, channel) for channel in CHANNELS})
        drop_stored_responses(self.runtime.db, [f"/v1/messages/{i}" for i in ids])


def _variables(contact_id: str, found: dict[str, Any]) -> dict[str, Any]:
    first, last = found.get("first_name") or "", found.get("last_name") or ""
    return {"first_name": first, "last_name": last, "name": f"{first} {last}".strip(),
            "email": found.get("email") or "", "phone": found.get("phone") or "",
            "company_id": found.get("company_id") or "", "locale": found.get("locale") or "",
            "time_zone": found.get("time_zone") or "", "lifecycle_stage": found.get("lifecycle_stage") or "",
            "contact_id": contact_id}


def _check_variants(variants: dict[str, Any], limits: templates.RenderLimits) -> None:
    """Every part compiles in the sandbox and breaks no cap that shows without variables,
    and every subject is one line."""
    errors: dict[str, list[str]] = {}
    for locale, variant in variants.items():
        for part in templates.PARTS:
            if variant.get(part):
                try:
                    templates.check(variant[part])
                    templates.check_caps(variant[part], part, limits)
                except templates.TemplateRejected as exc:
                    errors.setdefault(f"variants.{locale}.{part}", []).append(str(exc))
        if variant.get("subject") and (problem := subject_problem(variant["subject"])):
            errors.setdefault(f"variants.{locale}.subject", []).append(problem)
    if errors:
        raise ValidationFailed("a template does not compile or is unsafe", errors)


__all__ = ["MessageDesk", "derived_id"]
