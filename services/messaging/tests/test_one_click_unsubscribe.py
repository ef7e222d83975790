"""One-click unsubscribe (RFC 8058): the mail carries `List-Unsubscribe` and
`List-Unsubscribe-Post`; POST to the link unsubscribes; GET only shows a confirmation page
in the contact's language (mail scanners follow links: a GET must change nothing)."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage

from .conftest import World

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def marketing_mail(world: World, **contact: object) -> tuple[str, EmailMessage]:
    """A marketing mail sent to a new contact with email consent: (contact id, the mail at the sink)."""
    person = world.contact(email="person@example.com", **contact)
    world.send(contact_id=person["id"], channel="email", body="news")
    world.dispatch()
    [eml] = world.mails()
    return person["id"], email.message_from_bytes(eml.read_bytes(), policy=policy.default)


def link_path(mail: EmailMessage) -> str:
    url = str(mail["List-Unsubscribe"]).strip().removeprefix("<").removesuffix(">")
    assert url.startswith("http://crm.test/v1/unsubscribe/"), url
    return url.removeprefix("http://crm.test")


def granted(world: World, contact_id: str) -> bool:
    return world.desk.directory.consent(contact_id, "email").granted


def test_the_mail_carries_both_one_click_headers(world: World) -> None:
    _, mail = marketing_mail(world, first_name="Sara")
    assert str(mail["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    path = link_path(mail)
    assert path in mail.get_content()  # the same link in the body, for people


def test_get_shows_a_confirmation_form_and_changes_nothing(world: World) -> None:
    contact_id, mail = marketing_mail(world, first_name="Sara", locale="en-GB")
    path = link_path(mail)
    for _ in range(2):  # a scanner, then the person
        page = world.messaging.client.get(path)
        assert page.status_code == 200 and page.mimetype == "text/html"
        html = page.get_data(as_text=True)
        assert '<form method="post"' in html and f'action="{path}"' in html
        assert 'lang="en"' in html and 'dir="ltr"' in html
    assert granted(world, contact_id)


def test_one_click_post_unsubscribes_and_a_repeat_is_harmless(world: World) -> None:
    contact_id, mail = marketing_mail(world, first_name="Sara")
    path = link_path(mail)
    done = world.messaging.client.post(path, data=ONE_CLICK)  # what a mail client sends; no Authorization
    assert done.status_code == 200, done.get_data(as_text=True)
    assert not granted(world, contact_id)
    assert world.desk.directory.consent(contact_id, "email").reason == "consent_withdrawn"
    assert world.messaging.client.post(path, data=ONE_CLICK).status_code == 200
    assert world.messaging.client.post(path).status_code == 200  # an empty body too
    after = world.send(contact_id=contact_id, channel="email", body="more news").get_json()
    world.dispatch()
    assert world.get(f"/v1/messages/{after['id']}").get_json()["status"] == "suppressed"


def test_the_page_speaks_the_contacts_language(world: World) -> None:
    _, mail = marketing_mail(world, first_name="سارا", locale="fa-IR")
    html = world.messaging.client.get(link_path(mail)).get_data(as_text=True)
    assert 'lang="fa"' in html and 'dir="rtl"' in html and "لغو" in html
    done = world.messaging.client.post(link_path(mail), data=ONE_CLICK).get_data(as_text=True)
    assert 'lang="fa"' in done and 'dir="rtl"' in done


def test_a_bad_link_is_a_clear_page_never_a_500(world: World) -> None:
    _, mail = marketing_mail(world, first_name="Sara")
    path = link_path(mail)
    for bad in (
        path[:-3] + "abc",
        "/v1/unsubscribe/not-a-token",
        "/v1/unsubscribe/" + "é" * 40,
        "/v1/unsubscribe/" + "a" * 5000,
    ):
        for method in ("GET", "POST"):
            answer = world.messaging.client.open(bad, method=method, data=ONE_CLICK)
            assert answer.status_code == 404, (bad, method, answer.status_code)
            assert "not valid" in answer.get_data(as_text=True)


def test_arabic_contacts_get_an_arabic_right_to_left_page(world: World) -> None:
    _, mail = marketing_mail(world, first_name="ليلى", locale="ar-SA")
    html = world.messaging.client.get(link_path(mail)).get_data(as_text=True)
    assert '<html lang="ar" dir="rtl">' in html and "إلغاء الاشتراك" in html


def test_lang_query_overrides_the_contacts_locale_and_is_kept_by_the_form(world: World) -> None:
    contact_id, mail = marketing_mail(world, first_name="سارا", locale="fa-IR")
    path = link_path(mail)
    html = world.messaging.client.get(path + "?lang=en", headers={"Accept-Language": "ar"}).get_data(as_text=True)
    assert '<html lang="en" dir="ltr">' in html and "Unsubscribe" in html
    assert f'action="{path}?lang=en"' in html  # the confirmation answers in the language chosen
    done = world.messaging.client.post(path + "?lang=en", data=ONE_CLICK)
    assert done.status_code == 200 and '<html lang="en" dir="ltr">' in done.get_data(as_text=True)
    assert not granted(world, contact_id)
    assert world.messaging.client.get(path + "?lang=" + "x" * 40).status_code == 422


def test_a_bad_link_page_follows_lang_then_the_browser(world: World) -> None:
    bad = "/v1/unsubscribe/not-a-token"
    browser = world.messaging.client.get(bad, headers={"Accept-Language": "fa-IR,fa;q=0.9"})
    assert browser.status_code == 404 and '<html lang="fa" dir="rtl">' in browser.get_data(as_text=True)
    chosen = world.messaging.client.get(bad + "?lang=ar", headers={"Accept-Language": "fa"})
    assert '<html lang="ar" dir="rtl">' in chosen.get_data(as_text=True)
    assert '<html lang="en" dir="ltr">' in world.messaging.client.get(bad).get_data(as_text=True)
