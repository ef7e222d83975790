"""Pure rules: the template sandbox, quiet hours, back-off, unsubscribe tokens, rate buckets."""

from datetime import UTC, datetime, time, timedelta

import pytest

from crm_messaging import templates, unsubscribe
from crm_messaging.dispatcher import Bucket
from crm_messaging.domain import Campaign, Message, Template, Trigger, backoff, parse_window, quiet_until
from crmkit.errors import Conflict


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ name.__init__.__globals__ }}",
        "{{ x['__class__'] }}",
        "{{ x|attr('__class__') }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ namespace.__init__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ config._secret }}",
        "{% for x in y %}{{ x._private }}{% endfor %}",
        "{{ name",
    ],
)
def test_templates_reaching_for_python_internals_are_rejected_when_saved(source: str) -> None:
    with pytest.raises(templates.TemplateRejected):
        templates.check(source)


def test_the_sandbox_renders_nothing_sensitive_even_unchecked() -> None:
    # globals are gone: cycler/joiner/namespace/range/lipsum are undefined and render empty
    assert templates.render("[{{ cycler }}{{ joiner }}{{ namespace }}{{ lipsum }}{{ range }}]", {}) == "[]"
    with pytest.raises(templates.TemplateRejected):
        templates.render("{{ ''.__class__.__mro__ }}", {})  # checked again at render time
    # and the sandbox itself, below the check, refuses unsafe attributes at run time
    assert templates.ENV.from_string("{{ ''.__class__ }}").render() == ""
    assert templates.ENV.from_string("{{ x.__class__.__mro__ }}").render(x="s") == ""
    with pytest.raises(templates.TemplateRejected):
        templates.render("{{ items.append(1) }}", {"items": []})  # immutable sandbox: no mutation
    # only JSON-like values get in: an object becomes its text
    assert templates.render("{{ thing }}", {"thing": object()}).startswith("<object")


def test_right_to_left_text_passes_through_untouched() -> None:
    source = "سلام {{ first_name }} عزیز، سفارش {{ order }} ارسال شد. مرحبا بكم ‏"
    out = templates.render(source, {"first_name": "زهرا", "order": "۱۲۳"})
    assert out == "سلام زهرا عزیز، سفارش ۱۲۳ ارسال شد. مرحبا بكم ‏"
    assert templates.render("<b>{{ x }}</b> & co", {"x": "<i>"}) == "<b><i></b> & co"  # plain text, not HTML


def test_template_variants_fall_back_from_region_to_language_to_default() -> None:
    template = Template.define(
        "t",
        {
            "name": "n",
            "channel": "email",
            "category": "marketing",
            "default_locale": "en",
            "variants": {"en": {"body": "hi"}, "fa": {"body": "س"}},
        },
    )
    assert template.variant("fa-IR")[0] == "fa"
    assert template.variant("de-DE")[0] == "en"
    assert template.variant(None)[0] == "en"


def test_quiet_hours_follow_the_contacts_wall_clock_across_zones() -> None:
    window = parse_window("21:00-08:00")
    assert window == (time(21), time(8))
    at = datetime(2026, 3, 1, 19, 0, tzinfo=UTC)  # 22:30 in Tehran (+03:30), 14:00 in New York (-05:00)
    tehran = quiet_until(at, "Asia/Tehran", window)
    assert tehran == datetime(2026, 3, 2, 4, 30, tzinfo=UTC)  # 08:00 Tehran next morning
    assert quiet_until(at, "America/New_York", window) is None
    # 02:00 local: quiet until 08:00 the same day
    assert quiet_until(datetime(2026, 3, 1, 22, 30, tzinfo=UTC), "Asia/Tehran", window) == datetime(
        2026, 3, 2, 4, 30, tzinfo=UTC
    )
    # unknown or missing zones count as UTC; a window that does not wrap midnight
    assert quiet_until(at, "Mars/Olympus", window) is None
    assert quiet_until(at, None, parse_window("18:00-20:00")) == datetime(2026, 3, 1, 20, tzinfo=UTC)
    assert quiet_until(at, "Asia/Tehran", parse_window("off")) is None
    # the end is computed in local time across a DST change (New York springs forward 2026-03-08)
    night = datetime(2026, 3, 8, 4, 0, tzinfo=UTC)  # 23:00 EST on the 7th
    assert quiet_until(night, "America/New_York", window) == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)  # 08:00 EDT


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 30, 300).total_seconds() for n in range(1, 7)] == [30, 60, 120, 240, 300, 300]


def test_unsubscribe_tokens_are_signed_and_tamper_evident() -> None:
    token = unsubscribe.sign("secret", "contact-1", "email")
    assert unsubscribe.verify("secret", token) == ("contact-1", "email")
    payload, signature = token.split(".")
    forged = unsubscribe.sign("other-secret", "contact-2", "email").split(".")[0]
    for bad in (f"{forged}.{signature}", f"{payload}.{signature[:-2]}AA", payload, "", "a.b.c", "x" * 2000):
        with pytest.raises(unsubscribe.BadToken):
            unsubscribe.verify("secret", bad)
    with pytest.raises(unsubscribe.BadToken):
        unsubscribe.verify("another-secret", token)


def test_bucket_spaces_sends_on_the_given_clock() -> None:
    bucket, start = Bucket(60), datetime(2026, 1, 1, tzinfo=UTC)
    assert bucket.wait(start) == timedelta(0)
    assert bucket.wait(start) == timedelta(seconds=1)
    assert bucket.wait(start + timedelta(seconds=1)) == timedelta(0)


def test_bucket_spreads_a_backlog_over_the_following_slots() -> None:
    bucket, start = Bucket(60), datetime(2026, 1, 1, tzinfo=UTC)
    waits = [bucket.wait(start) for _ in range(5)]  # one batch: one goes now, the rest get a slot each
    assert waits == [timedelta(seconds=s) for s in range(5)]
    back = start + timedelta(seconds=1)  # the first of the backlog comes back at its slot and goes
    assert bucket.wait(back) == timedelta(0)
    assert bucket.wait(back) == timedelta(seconds=4)  # a newcomer queues behind the backlog


def test_bucket_starts_afresh_when_the_clock_is_set_back() -> None:
    bucket, start = Bucket(60), datetime(2026, 1, 1, tzinfo=UTC)
    later = start + timedelta(days=400)
    assert [bucket.wait(later) for _ in range(3)] == [timedelta(seconds=s) for s in range(3)]
    assert bucket.wait(start) == timedelta(0)  # not 400 days of debt
    assert bucket.wait(start) == timedelta(seconds=1)


def test_the_message_state_machine_never_sends_twice() -> None:
    message = Message.queue("m", {"contact_id": "c", "channel": "email", "body": "hi"}, "2026-01-01T00:00:00Z")
    message.sent("smtp", "<m@x>", "a@b.c", None, "hi", "2026-01-01T00:00:01Z")
    with pytest.raises(Conflict):
        message.sent("smtp", "<m@x>", "a@b.c", None, "hi", "2026-01-01T00:00:02Z")
    with pytest.raises(Conflict):
        message.suppress("no_consent")
    message.delivered("2026-01-01T00:00:03Z")
    message.delivered("2026-01-01T00:00:04Z")  # a repeated receipt records nothing
    assert [e.type for e in message.pending] == ["MessageQueued", "MessageSent", "MessageDelivered"]


def test_restore_from_the_view_continues_the_fold_like_the_whole_stream() -> None:
    """Projections continue a fold from the stored view: every piece of state must come back."""
    message = Message.queue("m1", {"contact_id": "c1", "channel": "email", "body": "Hi"}, "2026-03-02T10:00:00.000Z")
    message.retry_later("smtp down", "2026-03-02T10:00:30.000Z")
    template = Template.define(
        "t1",
        {
            "name": "T",
            "channel": "email",
            "category": "marketing",
            "default_locale": "en",
            "variants": {"en": {"subject": None, "body": "Hi"}},
        },
    )
    campaign = Campaign.create(
        "k1", {"name": "C", "segment_id": "s1", "template_id": "t1", "channel": "email", "throttle_per_minute": 60}
    )
    campaign.launch(None, "2026-03-02T10:00:00.000Z")
    trigger = Trigger.define(
        "g1",
        {
            "name": "G",
            "event_type": "crm.sales.DealWon.v1",
            "filter": {},
            "template_id": "t1",
            "channel": "email",
            "variables": {},
            "enabled": False,
        },
    )
    for aggregate in (message, template, campaign, trigger):
        again = type(aggregate).restore(aggregate.view())
        assert vars(again) == {**vars(aggregate), "pending": []}
    private = {k: v for k, v in message.view().items() if k not in ("subject", "body", "variables", "address")}
    continued, whole = Message.restore(private), message
    for aggregate in (continued, whole):
        aggregate.sent("smtp", "p1", "a@example.com", None, "Hi", "2026-03-02T10:01:00.000Z")
    assert continued.view() == whole.view()
