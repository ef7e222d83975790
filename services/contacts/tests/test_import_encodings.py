"""Imports of what Iranian offices actually send: Windows-1256 CSV (detected or declared),
.xlsx workbooks (by Content-Type or by their zip signature), and clear refusals for the rest."""

from __future__ import annotations

import io
import zipfile

import pytest
from openpyxl import Workbook

from crm_contacts.imports import formats as import_formats
from crm_contacts.imports.formats import Charset
from crmkit.errors import ValidationFailed
from crmkit.testing import ServiceHarness

from .test_imports import CSV, NDJSON, find, job, queued, rejections, run, upload

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Windows-1256 has no Persian yeh (ی): Excel saves it as the Arabic yeh (ي), as here. It has
# the letters Arabic lacks (پ چ ژ گ) and the Persian keheh (ک).
PERSIAN_CSV = (
    "first_name,last_name,email,tags\n"
    "علي,رضايي,ali@example.com,مشتري;ويژه\n"
    "زهرا,کريمي,zahra@example.com,\n"
    "پژمان,گودرزي,pejman@example.com,\n"
)


def workbook(rows: list[list[object]]) -> bytes:
    book = Workbook()
    for row in rows:
        book.active.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def nothing_stored(contacts: ServiceHarness) -> bool:
    db = contacts.runtime.db
    return db["imports"].count_documents({}) == 0 and db["import_chunks"].count_documents({}) == 0


# --- the decoder, unit by unit ------------------------------------------------------------------


def test_utf8_stays_utf8_even_split_inside_a_character() -> None:
    data = "email,first_name\nx@example.com,علی\n".encode()  # UTF-8 has the Persian yeh
    cut = data.index("ع".encode()) + 1  # in the middle of a two-byte letter
    decoder = Charset(None, fallback=True)
    text = decoder.decode(data[:cut]) + decoder.decode(data[cut:])
    decoder.finish()
    assert decoder.encoding == "utf-8" and text.endswith("علی\n")


def test_plain_ascii_then_a_byte_that_is_not_utf8_means_windows_1256() -> None:
    data = PERSIAN_CSV.encode("cp1256")
    decoder = Charset(None, fallback=True)
    text = "".join(decoder.decode(data[i : i + 7]) for i in range(0, len(data), 7))
    decoder.finish()
    assert decoder.encoding == "cp1256" and text == PERSIAN_CSV


def test_damaged_utf8_control_characters_and_a_declared_charset_are_not_guessed_around() -> None:
    damaged = Charset(None, fallback=True)
    damaged.decode("علی,".encode())
    with pytest.raises(ValidationFailed) as caught:
        damaged.decode(b"\xed\xed")  # valid Persian before: a broken file, not Windows-1256
    assert caught.value.errors == {"_body": ["invalid UTF-8 at byte 7"]}
    with pytest.raises(ValidationFailed):
        Charset(None, fallback=True).decode(b"email\n\xe1\x01\x02\x03")  # cp1256 text has no control codes
    with pytest.raises(ValidationFailed):
        Charset("utf-8", fallback=True).decode("علي".encode("cp1256"))  # declared UTF-8: no fallback
    with pytest.raises(ValidationFailed):
        Charset(None, fallback=False).decode("علي".encode("cp1256"))  # JSON lines: UTF-8 only
    assert Charset("cp1256", fallback=True).decode("پژمان".encode("cp1256")) == "پژمان"
    truncated = Charset(None, fallback=False)
    truncated.decode(b"ab" + "ع".encode()[:1])
    with pytest.raises(ValidationFailed) as caught:
        truncated.finish()
    assert caught.value.errors == {"_body": ["ends inside a UTF-8 character at byte 2"]}


def test_cells_read_like_csv_text() -> None:
    from datetime import date

    assert [import_formats.cell_text(v) for v in (None, 9123456789.0, 12, 1.5, True, date(2024, 8, 3), "x")] == [
        "",
        "9123456789",
        "12",
        "1.5",
        "true",
        "2024-08-03",
        "x",
    ]


# --- uploads, end to end -----------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [CSV, "text/csv; charset=windows-1256", "text/csv; charset=CP1256"])
def test_a_windows_1256_csv_imports_persian_names(contacts: ServiceHarness, content_type: str) -> None:
    accepted = queued(contacts, PERSIAN_CSV.encode("cp1256"), content_type)
    run(contacts)
    done = job(contacts, accepted["id"])
    assert (done["status"], done["created"], done["rejected"]) == ("completed", 3, 0), rejections(contacts, done["id"])
    [ali] = find(contacts, email="ali@example.com")
    assert (ali["first_name"], ali["last_name"], ali["tags"]) == ("علي", "رضايي", ["مشتري", "ويژه"])
    [pejman] = find(contacts, email="pejman@example.com")
    assert (pejman["first_name"], pejman["last_name"]) == ("پژمان", "گودرزي")  # the letters Arabic lacks
    assert [c["email"] for c in find(contacts, q="علی رضایی")] == ["ali@example.com"]  # Persian yeh finds it


@pytest.mark.parametrize("content_type", [XLSX, CSV, "application/x-ndjson"])  # zip signature wins
def test_an_xlsx_workbook_imports_like_a_csv(contacts: ServiceHarness, content_type: str) -> None:
    body = workbook(
        [
            ["first_name", "last_name", "email", "phone", None],
            ["مریم", "احمدی", "maryam@example.com", 9123456789, None],  # a number cell, its 0 lost
            [None, None, None, None, None],  # a blank row is skipped
            ["Sara", "Ahmadi", "not-an-email", None, None],
        ]
    )
    accepted = queued(contacts, body, content_type)
    assert accepted["format"] == "xlsx"
    run(contacts)
    done = job(contacts, accepted["id"])
    assert (done["status"], done["created"], done["rejected"]) == ("completed", 1, 1)
    [maryam] = find(contacts, email="maryam@example.com")
    assert (maryam["first_name"], maryam["phone"]) == ("مریم", "+989123456789")
    [rejected] = rejections(contacts, done["id"])
    assert rejected["row"] == 2 and rejected["line"] == 4 and set(rejected["errors"]) == {"email"}


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        (b"PK\x03\x04 this is not really a zip", XLSX, 422, "_body"),
        (_zip({"hello.txt": b"hi"}), CSV, 422, "_body"),  # a zip, not a workbook
        (workbook([["name", "e-mail"], ["x", "y"]]), XLSX, 422, "header"),
        (workbook([]), XLSX, 422, "header"),  # an empty sheet
        (b"email\nx@example.com\n", XLSX, 422, "_body"),  # a CSV sent as a workbook
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64, CSV, 422, "_body"),  # old binary .xls
        ("email\nx@example.com\n".encode("utf-16"), CSV, 422, "_body"),
        (b"email\n\xe1\x01\x02\n", CSV, 422, "_body"),  # not text in any encoding we take
        (b"email\n" + "علي".encode("cp1256"), "text/csv; charset=utf-8", 422, "_body"),
        ('{"first_name": "علي"}\n'.encode("cp1256"), NDJSON, 422, "_body"),  # JSON is UTF-8
        (b'{"first_name": "x"}\n', "application/x-ndjson; charset=windows-1256", 415, "Content-Type"),
        (b"email\nx@example.com\n", "text/csv; charset=koi8-r", 415, "Content-Type"),
    ],
)
def test_garbled_or_unsupported_files_are_a_problem_and_nothing_is_stored(
    contacts: ServiceHarness, body: bytes, content_type: str, status: int, field: str
) -> None:
    response = upload(contacts, body, content_type)
    problem = response.get_json()
    assert response.status_code == status, problem
    assert response.mimetype == "application/problem+json" and field in problem["errors"], problem
    assert nothing_stored(contacts)


def test_a_zip_bomb_is_refused_before_it_is_parsed(contacts: ServiceHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_contacts.settings import ContactsSettings

    monkeypatch.setattr(ContactsSettings, "xlsx_max_unpacked", property(lambda _: 10_000))  # 10x a 1 KB body
    body = workbook([["email"], ["x" * 20_000 + "@example.com"]])
    response = upload(contacts, body, XLSX)
    assert response.status_code == 422 and "unpacked" in response.get_json()["errors"]["_body"][0]
    assert nothing_stored(contacts)
