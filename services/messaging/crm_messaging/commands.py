"""The messaging service's use cases: the REST and gRPC edges and the worker call these.

`MessageUseCases` queues messages (and schedules them for the dispatcher), answers
queries, records receipts, runs the campaign and trigger commands, handles unsubscribes
and scrubs a contact's messages when the contact is erased. It knows the event store
(the `crmkit.store.Store` contract), the read side and work lists it uses
(`views.MessagingViews`, `views.WorkLists`) and the contacts directory client, never a
collection, so the use-case tests run it on `crmkit.memstore.InMemoryEventStore` and
in-memory views, no server. `MessageDesk` is the same use cases on a process's
`Runtime` (MongoDB), with the collections the dispatcher, the reactors and the indexes use.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from crm_messaging import reactions, templates, unsubscribe
from crm_messaging.config import MessagingConfig
from crm_messaging.config import current as current_config
from crm_messaging.domain import CHANNELS, Campaign, Message, Template, Trigger, subject_problem
from crm_messaging.projections import CampaignsView, MessagesView, TemplatesView, TriggersView
from crm_messaging.suppressions import Suppressions, suppression_id
from crm_messaging.views import MessagingViews, MongoMessagingViews, WorkLists
from crmkit import clock as platform_clock
from crmkit.directory import ContactDirectory, LocalContacts
from crmkit.erasure import Shred, nothing_to_shred, shredder
from crmkit.errors import NotFound, Unavailable, ValidationFailed
from crmkit.events import Metadata, RecordedEvent, epoch_ms, new_id, rfc3339
from crmkit.keys import link_secret
from crmkit.repository import Repository
from crmkit.runtime import Runtime
from crmkit.store import Store
from crmkit.web.webhooks import shared_secret

NAMESPACE = uuid.UUID("6f1d3c1e-6b0a-4f4e-9a57-2f0c1f6c2a11")


def derived_id(*parts: str) -> str:
    """A message id fixed by what caused it (campaign+contact, trigger+event): queuing twice is a no-op."""
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))


class MessageUseCases:
    """Messaging's use cases on any event store, `MessagingViews` and `WorkLists`.

    `publish` is handed what each save stored (the runtime's outbox sender; a list's
    `extend` in tests); `shred(subjects, response_paths)` (crmkit.erasure) forgets what an erasure leaves
    readable outside the events: the data keys of the messages and of the other
    `subjects` (the person's suppressions), and the stored responses about the messages."""

    def __init__(
        self,
        store: Store,
        views: MessagingViews,
        worklists: WorkLists,
        publish: Callable[[list[RecordedEvent]], None],
        config: MessagingConfig | None = None,
        directory: ContactDirectory | None = None,
        clock: Callable[[], datetime] = platform_clock.now,
        shred: Shred = nothing_to_shred,
    ) -> None:
        self.store = store
        self.views = views
        self.worklists = worklists
        self.config = config or current_config()
        self.clock = clock
        self.shred = shred
        self._directory = directory
        self.messages: Repository[Message] = Repository(store, Message, publish)
        self.templates: Repository[Template] = Repository(store, Template, publish)
        self.campaigns: Repository[Campaign] = Repository(store, Campaign, publish)
        self.triggers: Repository[Trigger] = Repository(store, Trigger, publish)
        self.suppressions = Suppressions(store, publish)  # bounced and complained addresses

    @property
    def directory(self) -> ContactDirectory:
        if self._directory is None:
            self._directory = ContactDirectory()
        return self._directory

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

    def update_template(
        self, template_id: str, fields: dict[str, Any], meta: Metadata, if_match: int | None
    ) -> Template:
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
        return self.views.template_page(query.get("channel"), query["limit"], query.get("cursor"))

    def preview(
        self,
        template_id: str | None,
        source: dict[str, Any] | None,
        locale: str | None,
        variables: dict[str, Any],
        contact_id: str | None,
    ) -> dict[str, Any]:
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
                rendered[part] = (
                    templates.render(variant[part], context, self.config.render_limits, part)
                    if variant.get(part)
                    else None
                )
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
            raise ValidationFailed("a template_id or a body is required", {"body": ["required without template_id"]})
        else:
            _check_variants(
                {"message": {"subject": fields.get("subject"), "body": fields["body"]}}, self.config.render_limits
            )
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
            raise ValidationFailed(
                "the template is for another channel", {"template_id": [f"is a {template.channel} template"]}
            )
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
        found = self.views.contacts(contact_ids)
        missing = [cid for cid in dict.fromkeys(contact_ids) if cid not in found]
        if missing:
            try:
                fetched = self.directory.many(missing)
            except (NotFound, Unavailable):
                if not tolerate_outage:
                    raise
                return found
            self.views.remember_contacts(list(fetched.values()))
            found.update(fetched)
        return found

    def schedule_messages(self, messages: Sequence[Message]) -> None:
        """Schedule entries go in before the messages' first events: a process that dies in
        between leaves an entry the dispatcher waits on a while (`UNBORN_GRACE`), never a
        queued message nobody sends. An entry that exists already (a repeat) stays as it is.
        A new message is due at once (`due_ms` 0), whatever this process's clock says: a clock
        moved back (drills, tests) must not park it until the old "now" comes round again."""
        now = epoch_ms(self.now())
        entries = [
            {
                "_id": m.id,
                "kind": "message",
                "state": "pending",
                "due_ms": 0,
                "lease_ms": 0,
                "created_ms": now,
                "contact_id": m.contact_id,
                "channel": m.channel,
                "campaign_id": m.campaign_id,
            }
            for m in messages
        ]
        self.worklists.schedule_messages(entries)

    def message(self, message_id: str) -> Message:
        return self.messages.get(message_id)

    def message_consent(self, message_id: str) -> dict[str, Any]:
        """The consent decision the message's send or suppression relied on (None while it
        waits, or when none was asked), from its own events: the proof, not the read model."""
        return self.messages.get(message_id).consent_proof()

    def consent_report(self, start: date, end: date) -> dict[str, Any]:
        return self.views.consent_report(start, end)

    def list_messages(self, query: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        return self.views.message_page(query, query["limit"], query.get("cursor"))

    def contact_messages(
        self, contact_id: str, limit: int, after: tuple[int, str] | None = None
    ) -> list[dict[str, Any]]:
        """A contact's messages newest first (queued_ms, then id, both descending), from just
        past `after`, the (queued_ms, id) of the last one a previous page showed: keyset paging
        never skips or repeats a message as new ones arrive."""
        return self.views.contact_messages(contact_id, limit, after)

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
            message_id = self.worklists.sent_as(provider, body["provider_message_id"])
            if message_id is None:
                raise NotFound(f"no message sent through {provider} as {body['provider_message_id']}")
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

    def launch_campaign(
        self, campaign_id: str, scheduled_at: datetime | None, meta: Metadata, if_match: int | None
    ) -> Campaign:
        now = self.now()
        when = scheduled_at if scheduled_at and scheduled_at > now else now
        campaign = self.campaigns.change(campaign_id, lambda c: c.launch(rfc3339(when), rfc3339(now)), meta, if_match)
        self.worklists.schedule_campaign(campaign_id, epoch_ms(when))
        return campaign

    def campaign_action(self, campaign_id: str, action: str, meta: Metadata, if_match: int | None) -> Campaign:
        return self.campaigns.change(campaign_id, lambda c: getattr(c, action)(), meta, if_match)

    def campaign(self, campaign_id: str) -> dict[str, Any]:
        campaign = self.campaigns.get(campaign_id)
        return {**campaign.view(), "stats": self.campaign_stats(campaign_id, campaign.targeted)}

    def campaign_stats(self, campaign_id: str, targeted: int | None) -> dict[str, Any]:
        counts = self.views.campaign_counts(campaign_id)
        stats: dict[str, Any] = {
            status: counts.get(status, 0) for status in ("queued", "suppressed", "sent", "delivered", "failed")
        }
        stats["failed"] += counts.get("bounced", 0)
        stats["sent"] += stats["delivered"]  # delivered messages were sent
        stats["targeted"] = targeted or 0
        done = stats["suppressed"] + stats["sent"] + stats["failed"]
        stats["progress"] = round(done / targeted, 4) if targeted else 0.0
        return stats

    def list_campaigns(self, query: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        return self.views.campaign_page(query.get("status"), query["limit"], query.get("cursor"))

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

    def _queue_members(self, campaign: Campaign, members: list[dict[str, Any]], queued_at: str, meta: Metadata) -> int:
        self.views.remember_contacts([{**member, "id": member["contact_id"]} for member in members])
        self.queue_many(
            [
                Message.queue(
                    derived_id("campaign", campaign.id, member["contact_id"]),
                    {
                        "contact_id": member["contact_id"],
                        "channel": campaign.channel,
                        "template_id": campaign.template_id,
                        "campaign_id": campaign.id,
                        "category": "marketing",
                    },
                    queued_at,
                )
                for member in members
            ],
            lambda _: meta,
        )
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
        self.worklists.register_trigger(trigger_id)

    def trigger_ids(self) -> list[str]:
        return self.worklists.trigger_ids()

    def set_trigger_enabled(self, trigger_id: str, enabled: bool, meta: Metadata, if_match: int | None) -> Trigger:
        return self.triggers.change(trigger_id, lambda t: t.set_enabled(enabled), meta, if_match)

    def list_triggers(self, query: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        return self.views.trigger_page(query["limit"], query.get("cursor"))

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

        self.messages.change_many(
            self._messages_of(duplicate_id), move, Metadata(actor="system:contact-merge", causation_id=merge_id)
        )

    def contact_unmerged(self, duplicate_id: str, survivor_id: str, merge_id: str | None) -> None:
        """ContactUnmerged: the messages that merge moved, and nothing moved since, are the
        duplicate's again. Safe to repeat."""
        self.messages.change_many(
            self._messages_of(duplicate_id),
            lambda message: message.move_back(duplicate_id, survivor_id, merge_id),
            Metadata(actor="system:contact-unmerge", causation_id=merge_id),
        )

    def _messages_of(self, contact_id: str) -> list[str]:
        """Messages that are or were the contact's: from the event store (`references`, so one the
        read model has not folded yet is found) and the read model (messages stored before)."""
        found = {stream for stream, _ in self.store.streams_referring([contact_id], [Message.aggregate_type])}
        found |= self.views.message_ids_of(contact_id)
        return sorted(found)

    def erase_contact(self, contact_id: str) -> None:
        """ContactErased: the contact's message bodies, addresses and variables become unreadable
        (their messages' keys are deleted) and stored responses about them are dropped."""
        ids = self.views.message_ids_of(contact_id) | self.worklists.scheduled_message_ids_of(contact_id)
        # their suppressed addresses too: the streams exist or not, forgetting a key never made is harmless
        subjects = [*sorted(ids), *(suppression_id(contact_id, channel) for channel in CHANNELS)]
        self.shred(subjects, [f"/v1/messages/{i}" for i in sorted(ids)])


class MessageDesk(MessageUseCases):
    """The use cases on a process's runtime: MongoDB's event store, read models and work lists.

    Keeps the collections (`schedule`, `messages_view`, ...) and the local contacts copy for
    the dispatcher, the reactors, the export and the tests, which use them directly."""

    def __init__(
        self,
        runtime: Runtime,
        config: MessagingConfig | None = None,
        directory: ContactDirectory | None = None,
        clock: Callable[[], datetime] = platform_clock.now,
    ) -> None:
        self.runtime = runtime
        self._directory = directory
        db = runtime.db
        self.contacts = LocalContacts(
            "contacts",
            db["contacts"],
            self.directory,
            service="messaging",  # reactions.py
            **reactions.contact_hooks(self),
        )
        self.mongo_views = MongoMessagingViews(db, self.contacts)
        super().__init__(
            runtime.store,
            self.mongo_views,
            self.mongo_views,
            runtime.publish,
            config,
            self._directory,
            clock,
            shredder(runtime.vault, runtime.db),
        )
        self.schedule = self.mongo_views.schedule  # the dispatcher works on it: messages, campaigns, due times, leases
        self.messages_view = self.mongo_views.messages
        self.templates_view = self.mongo_views.templates
        self.campaigns_view = self.mongo_views.campaigns
        self.triggers_view = self.mongo_views.triggers
        self.trigger_register = self.mongo_views.trigger_register  # every trigger id, written before its first event

    def read_models(self) -> list[Any]:
        store, topic, db = self.runtime.store, self.runtime.settings.topic, self.runtime.db
        return [
            MessagesView("messages", db["messages"], store, topic),
            TemplatesView("templates", db["templates"], store, topic),
            CampaignsView("campaigns", db["campaigns"], store, topic),
            TriggersView("triggers", db["triggers"], store, topic),
        ]

    def ensure_indexes(self) -> None:
        self.mongo_views.ensure_indexes()
        for model in self.read_models():
            model.ensure_indexes()


def _variables(contact_id: str, found: dict[str, Any]) -> dict[str, Any]:
    first, last = found.get("first_name") or "", found.get("last_name") or ""
    return {
        "first_name": first,
        "last_name": last,
        "name": f"{first} {last}".strip(),
        "email": found.get("email") or "",
        "phone": found.get("phone") or "",
        "company_id": found.get("company_id") or "",
        "locale": found.get("locale") or "",
        "time_zone": found.get("time_zone") or "",
        "lifecycle_stage": found.get("lifecycle_stage") or "",
        "contact_id": contact_id,
    }


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


__all__ = ["MessageDesk", "MessageUseCases", "derived_id"]
