"""The satisfaction survey behind the emailed link: a signed, single-use, no-login page and answer."""

from __future__ import annotations

from datetime import timedelta

from crmkit import signing
from crmkit.testing import ServiceHarness

from .test_api import open_ticket, post


def solved_ticket(desk: ServiceHarness, contact_id: str) -> dict:
    ticket = open_ticket(desk, contact_id)
    response = post(desk, f"/v1/tickets/{ticket['id']}/status", {"status": "solved"})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def link(ticket_id: str, contact_id: str, ttl: timedelta = timedelta(days=30)) -> str:
    return "/v1/surveys/" + signing.sign("survey", {"ticket_id": ticket_id, "contact_id": contact_id}, ttl=ttl)


def test_the_link_shows_a_form_records_the_rating_once_and_then_says_so(desk: ServiceHarness, directory) -> None:
    cid = directory.add("c-1")
    ticket = solved_ticket(desk, cid)
    url = link(ticket["id"], cid)

    page = desk.client.get(url)  # no Authorization header
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '<form method="post"' in html and 'name="csat"' in html and 'name="nps"' in html
    assert '<textarea id="comment" name="comment" dir="auto"' in html and 'charset="utf-8"' in html
    assert "سفارش" not in html  # nothing of the request itself: a forwarded link shows nothing personal

    answer = desk.client.post(url, json={"csat": 5, "nps": 9, "comment": "خیلی خوب بود"})
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["satisfaction"]["csat"] == 5

    again = desk.client.post(url, json={"csat": 1})
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    assert desk.client.get(url).status_code == 409  # the page says "already rated"
    assert "Already rated" in desk.client.get(url).get_data(as_text=True)

    rated = desk.client.get(f"/v1/tickets/{ticket['id']}", headers=desk.headers("servicedesk:read")).get_json()
    assert rated["satisfaction"]["csat"] == 5 and rated["satisfaction"]["comment"] == "خیلی خوب بود"
    history = desk.client.get(f"/v1/tickets/{ticket['id']}/history", headers=desk.headers()).get_json()["items"]
    rating = [h for h in history if h["type"] == "SatisfactionRated"]
    assert len(rating) == 1 and rating[0]["actor"] == f"contact:{cid}"


def test_a_browser_form_is_answered_with_pages(desk: ServiceHarness, directory) -> None:
    cid = directory.add("c-2")
    ticket = solved_ticket(desk, cid)
    url = link(ticket["id"], cid)
    bad = desk.client.post(url, data={"csat": "9", "nps": "", "comment": ""})
    assert bad.status_code == 422 and bad.mimetype == "text/html"
    good = desk.client.post(url, data={"csat": "4", "nps": "10", "comment": "سپاس"})
    assert good.status_code == 201 and "Thank you" in good.get_data(as_text=True)
    rated = desk.client.get(f"/v1/tickets/{ticket['id']}", headers=desk.headers()).get_json()["satisfaction"]
    assert (rated["csat"], rated["nps"], rated["comment"]) == (4, 10, "سپاس")
    assert desk.client.post(url, data={"csat": "5"}).status_code == 409


def test_forged_expired_foreign_or_early_links_record_nothing(desk: ServiceHarness, directory) -> None:
    cid, other = directory.add("c-3"), directory.add("c-4")
    ticket = solved_ticket(desk, cid)
    forged = link(ticket["id"], cid)[:-3] + "AAA"
    expired = link(ticket["id"], cid, ttl=timedelta(seconds=-1))
    someone_else = link(ticket["id"], other)
    unsubscribe = "/v1/surveys/" + signing.sign("unsubscribe", {"ticket_id": ticket["id"], "contact_id": cid})
    unknown = link("no-such-ticket", cid)
    not_base64 = link(ticket["id"], cid)[:-1] + "é"  # found by the fuzzer: was a 500
    for url, status in (
        (forged, 404),
        (expired, 410),
        (someone_else, 404),
        (unsubscribe, 404),
        (unknown, 404),
        (not_base64, 404),
    ):
        assert desk.client.get(url).status_code == status, url
        assert desk.client.post(url, json={"csat": 5}).status_code == status, url
    still_open = open_ticket(desk, cid)
    assert desk.client.post(link(still_open["id"], cid), json={"csat": 5}).status_code == 409  # not solved yet
    for t in (ticket, still_open):
        got = desk.client.get(f"/v1/tickets/{t['id']}", headers=desk.headers()).get_json()
        assert got["satisfaction"] is None


def _html_lang_dir(html: str) -> tuple[str, str]:
    head = html[html.index("<html") : html.index(">", html.index("<html"))]
    return head.split('lang="')[1].split('"')[0], head.split('dir="')[1].split('"')[0]


def test_the_page_speaks_the_contacts_language_right_to_left_for_persian_and_arabic(
    desk: ServiceHarness, directory
) -> None:
    persian, arab, english = (
        directory.add("c-fa", locale="fa-IR"),
        directory.add("c-ar", locale="ar"),
        directory.add("c-en", locale="en-GB"),
    )
    pages = {
        cid: desk.client.get(link(solved_ticket(desk, cid)["id"], cid)).get_data(as_text=True)
        for cid in (persian, arab, english)
    }
    assert _html_lang_dir(pages[persian]) == ("fa", "rtl") and "کار ما چطور بود؟" in pages[persian]
    assert "> ۵</label>" in pages[persian] and 'value="5"' in pages[persian]  # Persian digits shown, 0-9 sent
    assert _html_lang_dir(pages[arab]) == ("ar", "rtl") and "كيف كان أداؤنا؟" in pages[arab]
    assert _html_lang_dir(pages[english]) == ("en", "ltr") and "How did we do?" in pages[english]


def test_lang_query_then_accept_language_choose_when_the_contact_has_no_locale(desk: ServiceHarness, directory) -> None:
    cid = directory.add("c-none")
    url = link(solved_ticket(desk, cid)["id"], cid)
    assert _html_lang_dir(desk.client.get(url).get_data(as_text=True)) == ("en", "ltr")
    browser = desk.client.get(url, headers={"Accept-Language": "fa-IR,fa;q=0.9,en;q=0.5"}).get_data(as_text=True)
    assert _html_lang_dir(browser) == ("fa", "rtl")
    chosen = desk.client.get(url + "?lang=ar", headers={"Accept-Language": "fa"}).get_data(as_text=True)
    assert _html_lang_dir(chosen) == ("ar", "rtl")
    assert _html_lang_dir(desk.client.get(url + "?lang=de").get_data(as_text=True)) == ("en", "ltr")
    assert desk.client.get(url + "?lang=" + "x" * 40).status_code == 422
    thanks = desk.client.post(url + "?lang=fa", data={"csat": "5"})
    assert thanks.status_code == 201 and _html_lang_dir(thanks.get_data(as_text=True)) == ("fa", "rtl")
    assert "سپاسگزاریم" in thanks.get_data(as_text=True)
    again = desk.client.get(url + "?lang=fa")
    assert again.status_code == 409 and "قبلاً امتیاز داده‌اید" in again.get_data(as_text=True)


def test_a_bad_link_page_follows_the_readers_browser(desk: ServiceHarness) -> None:
    page = desk.client.get("/v1/surveys/not-a-token", headers={"Accept-Language": "ar"})
    assert page.status_code == 404 and _html_lang_dir(page.get_data(as_text=True)) == ("ar", "rtl")
    assert "الرابط غير صالح" in page.get_data(as_text=True)
