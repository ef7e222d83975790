"""JSON log lines: one object per line, correlation ids, and only the fields known to be safe."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from crmkit import logs
from crmkit.logs import JsonFormatter, correlation_id


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("contacts", "worker"))
    logger = logging.getLogger("crmkit.tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_the_basics(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.warning("projection %s is behind", "contact-list")
    [line] = lines(stream)
    assert line["message"] == "projection contact-list is behind"
    assert (line["level"], line["service"], line["process"], line["logger"]) == (
        "warning",
        "contacts",
        "worker",
        "crmkit.tests.logs",
    )
    assert line["time"].endswith("+00:00") and "T" in line["time"]
    assert "correlation_id" not in line  # none outside a request


def test_the_correlation_id_of_the_context_is_on_every_line(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    token = correlation_id.set("corr-42")
    try:
        logger.info("one")
        logger.error("two")
    finally:
        correlation_id.reset(token)
    logger.info("three")
    assert [line.get("correlation_id") for line in lines(stream)] == ["corr-42", "corr-42", None]


def test_only_safe_extra_fields_are_written(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info(
        "contact created",
        extra={
            "email": "zahra@example.com",
            "phone": "+989121234567",
            "first_name": "Zahra",
            "contact": {"x": 1},
            "stream_id": "c-1",
            "count": 3,
            "event_type": "ContactCreated",
        },
    )
    [line] = lines(stream)
    raw = stream.getvalue()
    for secret in ("zahra@example.com", "+989121234567", "Zahra"):
        assert secret not in raw
    assert {"email", "phone", "first_name", "contact"}.isdisjoint(line)
    assert (line["stream_id"], line["count"], line["event_type"]) == ("c-1", 3, "ContactCreated")


def test_every_safe_field_is_written_when_given(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("all", extra={name: f"v-{name}" for name in logs.SAFE_FIELDS})
    [line] = lines(stream)
    assert all(line[name] == f"v-{name}" for name in logs.SAFE_FIELDS)


def test_exceptions_are_included_and_unicode_kept(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise ValueError("بد")
    except ValueError:
        logger.exception("failed: %s", "مخاطب")
    [line] = lines(stream)
    assert line["message"] == "failed: مخاطب" and "ValueError" in line["exception"]
    assert "مخاطب" in stream.getvalue()  # not \u-escaped


def test_values_that_are_not_json_are_written_as_text(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("odd", extra={"error": ValueError("x"), "count": {1, 2}})
    [line] = lines(stream)
    assert line["error"] == "x" and isinstance(line["count"], str)


def test_configure_sends_everything_to_stderr_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    for noisy in ("kafka", "pymongo", "werkzeug"):
        monkeypatch.setattr(logging.getLogger(noisy), "level", logging.getLogger(noisy).level)  # restored after
    try:
        logs.configure("sales", "api", "INFO")
        logging.getLogger("anything").info("hello", extra={"email": "a@b.c"})
        logging.getLogger("anything").debug("not at INFO")
        logging.getLogger("kafka.conn").info("chatty library below WARNING")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    [line] = [json.loads(text) for text in stderr.getvalue().splitlines()]
    assert (line["service"], line["process"], line["message"]) == ("sales", "api", "hello")
    assert "a@b.c" not in stderr.getvalue()
