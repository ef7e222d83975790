"""Rendering is bounded: output size (subject and body apart), loop iterations and render
time are capped. A template that breaks a cap is a 422 naming the cap when saved (where it
can be seen without variables) and at preview; a send whose variables make it break a cap
fails that message alone, with the cap as the reason."""

from __future__ import annotations

import pytest

from crm_messaging import templates
from crm_messaging.templates import CapExceeded, RenderLimits

from .conftest import World

HUGE = "{{ 'x' * 50000000 }}"
NESTED = "".join("{% for a in 'abcdefghij' %}" for _ in range(7)) + "." + "{% endfor %}" * 7  # 10^7 iterations


def save(world: World, body: str, subject: str = "Hello") -> object:
    return world.messaging.client.post(
        "/v1/templates",
        json={
            "name": "caps",
            "channel": "email",
            "default_locale": "en",
            "variants": {"en": {"subject": subject, "body": body}},
        },
        headers=world.messaging.headers(),
    )


def preview(world: World, **body: object) -> object:
    return world.messaging.client.post("/v1/templates/preview", json=body, headers=world.messaging.headers())


def test_a_huge_literal_output_is_refused_at_save_and_at_preview_naming_the_cap(world: World) -> None:
    saved = save(world, HUGE)
    assert saved.status_code == 422, saved.get_json()
    assert "CRM_MESSAGING_MAX_BODY_BYTES" in " ".join(saved.get_json()["errors"]["variants.en.body"])
    shown = preview(world, body=HUGE)
    assert shown.status_code == 422, shown.get_json()
    assert "CRM_MESSAGING_MAX_BODY_BYTES" in str(shown.get_json()["errors"])
    subject = save(world, "fine", subject="{{ 'y' * 2000 }}")
    assert subject.status_code == 422
    assert "CRM_MESSAGING_MAX_SUBJECT_BYTES" in " ".join(subject.get_json()["errors"]["variants.en.subject"])


def test_nested_loops_are_refused_by_the_loop_cap_without_running(world: World) -> None:
    saved = save(world, NESTED)
    assert saved.status_code == 422, saved.get_json()
    assert "CRM_MESSAGING_MAX_LOOP_ITERATIONS" in " ".join(saved.get_json()["errors"]["variants.en.body"])
    shown = preview(world, body=NESTED)
    assert shown.status_code == 422 and "CRM_MESSAGING_MAX_LOOP_ITERATIONS" in str(shown.get_json()["errors"])


def test_loops_over_variables_stop_at_the_loop_cap_at_preview(world: World) -> None:
    body = "{% for a in v %}{% for b in v %}{% for c in v %}.{% endfor %}{% endfor %}{% endfor %}"
    saved = save(world, body)  # nothing to see without variables: it is stored
    assert saved.status_code == 201, saved.get_json()
    shown = preview(world, template_id=saved.get_json()["id"], variables={"v": "x" * 5000})  # 1.25e11 iterations
    assert shown.status_code == 422 and "CRM_MESSAGING_MAX_LOOP_ITERATIONS" in str(shown.get_json()["errors"])


def test_a_send_that_variables_make_too_big_fails_alone_naming_the_cap(world: World) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    saved = save(world, "{{ note * copies }}")
    assert saved.status_code == 201, saved.get_json()
    template_id = saved.get_json()["id"]
    big = world.send(
        contact_id=sara["id"], channel="email", template_id=template_id, variables={"note": "x" * 5000, "copies": 1000}
    ).get_json()  # 5 MB
    small = world.send(
        contact_id=sara["id"], channel="email", template_id=template_id, variables={"note": "hi ", "copies": 3}
    ).get_json()
    world.dispatch()
    failed = world.get(f"/v1/messages/{big['id']}").get_json()
    assert failed["status"] == "failed" and "CRM_MESSAGING_MAX_BODY_BYTES" in failed["reason"], failed
    assert world.get(f"/v1/messages/{small['id']}").get_json()["status"] == "sent"
    assert len(world.mails()) == 1


LIMITS = RenderLimits(subject_bytes=998, body_bytes=10_000, loop_iterations=1000, seconds=1.0)


@pytest.mark.parametrize(
    ("source", "variables", "cap"),
    [
        ("{{ v * 100 }}", {"v": "x" * 500}, "MAX_BODY_BYTES"),  # string repetition
        ("{{ [v] * 100000 }}", {"v": "x"}, "MAX_BODY_BYTES"),  # list repetition
        ("{{ 99 ** 99999999 }}", {}, "MAX_BODY_BYTES"),  # a number too big to compute, let alone print
        ("{{ n ** n }}", {"n": 99999}, "MAX_BODY_BYTES"),
        ("{{ '%99999999d' % 1 }}", {}, "MAX_BODY_BYTES"),  # a format width
        ("{{ '%*d' % (99999999, 1) }}", {}, "MAX_BODY_BYTES"),  # a width taken from the arguments
        ("{{ '%" + "9" * 5000 + "d' % 1 }}", {}, "MAX_BODY_BYTES"),  # a width too long for int()
        ("{{ '%99999999d'|format(1) }}", {}, "MAX_BODY_BYTES"),
        ("{{ v|replace('x', v) }}", {"v": "x" * 5000}, "MAX_BODY_BYTES"),  # 25 MB from one call
        ("{{ v.replace('', v) }}", {"v": "x" * 5000}, "MAX_BODY_BYTES"),
        ("{{ v|join(v) }}", {"v": "x" * 5000}, "MAX_BODY_BYTES"),
        ("{{ v.join(v) }}", {"v": "x" * 5000}, "MAX_BODY_BYTES"),
        ("{% set a = v + v %}{% set b = a + a %}{% set c = b + b %}{{ c }}", {"v": "x" * 2000}, "MAX_BODY_BYTES"),
        (
            "{% set a = v ~ v %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c|length }}",
            {"v": "x" * 2000},
            "MAX_BODY_BYTES",
        ),  # ~ builds text that is never printed
        # lists nested by reference print exponentially: refused before they are turned into text
        (
            "{% set a = [v, v] %}{% set b = [a, a] %}{% set c = [b, b] %}{% set d = [c, c] %}{{ d|string|length }}",
            {"v": "x" * 1000},
            "MAX_BODY_BYTES",
        ),
        (
            "{% macro m() %}{% for a in v %}{{ v }}{% endfor %}{% endmacro %}{{ m()|length }}",
            {"v": "x" * 900},
            "MAX_BODY_BYTES",
        ),  # text built in a macro counts, though only its length is printed
        ("{% for a in v %}{% for b in v %}.{% endfor %}{% endfor %}", {"v": "x" * 100}, "MAX_LOOP_ITERATIONS"),
        (
            "{% for a in v recursive %}{% if loop.depth < 4 %}{{ loop(v) }}{% endif %}{% endfor %}",
            {"v": "x" * 20},
            "MAX_LOOP_ITERATIONS",
        ),  # a recursive loop's inner loops count too
    ],
)
def test_each_way_of_growing_a_render_hits_a_cap(source: str, variables: dict, cap: str) -> None:
    with pytest.raises(CapExceeded, match=cap):
        templates.render(source, variables, LIMITS)


def test_render_time_is_capped_by_a_deadline_checked_in_the_sandbox() -> None:
    quick = RenderLimits(subject_bytes=998, body_bytes=10_000_000, loop_iterations=10_000_000, seconds=0.0)
    with pytest.raises(CapExceeded, match="MAX_RENDER_SECONDS"):
        templates.render("{% for a in v %}{{ a|upper }}{% endfor %}", {"v": "x" * 1000}, quick)


@pytest.mark.parametrize(
    "source",
    [
        "{{ x|center(999999999) }}",
        "{{ x|indent(999999999) }}",
        "{{ x.center(999999999) }}",
        "{{ x.ljust(999999999) }}",
        "{{ x.zfill(999999999) }}",
        "{{ '{:>999999999}'.format(x) }}",
        "{{ (1).to_bytes(999999999, 'big') }}",
        "{{ [[1]]|tojson(indent=999999) }}",
        "{{ x|batch(999999999, 'y')|list }}",
        "{{ x|slice(999999999)|list }}",
    ],
)
def test_filters_and_methods_that_pad_or_repeat_are_not_available(source: str) -> None:
    with pytest.raises(templates.TemplateRejected):
        templates.check(source)
        templates.render(source, {"x": "a"}, LIMITS)


def test_ordinary_templates_render_as_before() -> None:
    source = (
        "{{ first_name|title }} {{ last_name|upper }}: {{ '%.2f'|format(total) }} "
        "{% for item in items.split(',') %}[{{ loop.index }}:{{ item|trim }}]{% endfor %} "
        "{{ missing|default('-') }} {{ note|replace('a', 'b')|truncate(20) }} {{ ', '.join(['x', 'y']) }}"
    )
    out = templates.render(
        source,
        {"first_name": "sara", "last_name": "rezaei", "total": 12.5, "items": "tea, cake", "note": "banana"},
        LIMITS,
    )
    assert out == "Sara REZAEI: 12.50 [1:tea][2:cake] - bbnbnb x, y"
    assert templates.render("x" * 998, {}, LIMITS, part="subject") == "x" * 998
    with pytest.raises(CapExceeded, match="MAX_SUBJECT_BYTES"):
        templates.render("ی" * 500, {}, LIMITS, part="subject")  # 1000 bytes in UTF-8


@pytest.mark.parametrize(
    "source",
    [
        "{% if x %}" * 300 + "{% endif %}" * 300,
        "{{ " + "(" * 1000 + "1" + ")" * 1000 + " }}",
        "{% for a in 'ab' %}" * 120 + "{% endfor %}" * 120,
    ],
)
def test_a_template_nested_too_deeply_is_refused_not_a_crash(source: str) -> None:
    with pytest.raises(templates.TemplateRejected, match="nests too deeply"):
        templates.check(source)


@pytest.mark.parametrize(
    "source",
    [
        "{% if x %}{{ 'x' * 50000000 }}{% endif %}",  # a branch the trial render skips
        "{{ '%" + "9" * 5000 + "d' % 1 }}",  # a width int() would refuse to read
        "{% for a in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] %}{% for b in 'abcdefghij' %}"
        "{% for c in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11) %}{% if x %}.{% endif %}"
        "{% endfor %}{% endfor %}{% endfor %}",
    ],
)
def test_what_literals_show_is_refused_at_save_even_where_a_trial_render_does_not_go(source: str) -> None:
    with pytest.raises(CapExceeded):
        templates.check_caps(source, "body", LIMITS)
