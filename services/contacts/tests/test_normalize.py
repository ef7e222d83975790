"""Normalisation rules: what two spellings of the same identity must agree on."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_contacts.records import normalize

PERSIAN_LETTERS = "ابپتثجچحخدذرزژسشصضطظعغفقکگلمنوهی"
VARIANT_PAIRS = [("ي", "ی"), ("ك", "ک"), ("ى", "ی"), ("ة", "ه"), ("أ", "ا"), ("إ", "ا"), ("آ", "ا")]


def test_arabic_and_persian_spellings_fold_to_the_same_key() -> None:
    assert normalize.fold("علي") == normalize.fold("علی")
    assert normalize.fold("كريم") == normalize.fold("کریم")
    assert normalize.fold("مُحَمَّد") == normalize.fold("محمد")  # harakat are dropped
    assert normalize.fold("مـحـمـد") == normalize.fold("محمد")  # so is tatweel
    assert normalize.fold("  Ali   REZAEI ") == "ali rezaei"


def test_persian_digits_become_ascii() -> None:
    assert normalize.fold("۰۹۱۲۱۲۳۴۵۶۷") == "09121234567"
    assert normalize.fold("٠٩١٢") == "0912"


@given(st.text(alphabet=PERSIAN_LETTERS + " ", max_size=30), st.sampled_from(VARIANT_PAIRS))
def test_variant_letters_never_change_the_key(word: str, pair: tuple[str, str]) -> None:
    arabic, persian = pair
    assert normalize.fold(word.replace(persian, arabic)) == normalize.fold(word)


@given(st.text(max_size=50))
def test_fold_is_idempotent(text: str) -> None:
    assert normalize.fold(normalize.fold(text)) == normalize.fold(text)


@given(st.from_regex(r"[a-zA-Z0-9._%+-]{1,20}@[a-zA-Z0-9-]{1,20}\.[a-zA-Z]{2,6}", fullmatch=True))
def test_email_normalisation_is_case_and_space_insensitive(address: str) -> None:
    assert normalize.email(f"  {address.upper()} ") == normalize.email(address) == address.lower()


@pytest.mark.parametrize("bad", ["", "nope", "a@b", "a b@c.com", "@example.com", "x" * 250 + "@e.com"])
def test_bad_emails_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize.email(bad)


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+98 912 123 4567", None, "+989121234567"),
        ("+98 (912) 123-4567", None, "+989121234567"),
        ("۰۹۱۲۱۲۳۴۵۶۷", "IR", "+989121234567"),
        ("09121234567", "IR", "+989121234567"),
        ("+1 650-253-0000", None, "+16502530000"),
    ],
)
def test_phones_become_e164(raw: str, region: str | None, e164: str) -> None:
    assert normalize.phone(raw, region) == e164


@pytest.mark.parametrize("bad", ["12", "09121234567", "+98 12", "call me", "+999 123"])
def test_bad_phones_are_rejected_without_a_region(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize.phone(bad)


def test_terms_split_names_and_emails_without_repeats() -> None:
    assert normalize.terms("Ali Rezaei", "ali@example.com", None) == ["ali", "rezaei", "example.com"]
