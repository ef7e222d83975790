"""Messaging's settings (crm_messaging/config.py): every bad variable named, the trigger topics follow topic_of."""

from __future__ import annotations

import pytest

from crm_messaging.config import MessagingConfig
from crmkit.settings import SettingsError


def test_every_bad_variable_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        MessagingConfig.from_env(
            {
                "CRM_MESSAGING_SMTP_PORT": "mail",
                "CRM_MESSAGING_MAX_ATTEMPTS": "-1",
                "CRM_MESSAGING_SMS_TIMEOUT_SECONDS": "soon",
            }
        )
    assert [name for name, _ in caught.value.problems] == [
        "CRM_MESSAGING_SMTP_PORT",
        "CRM_MESSAGING_MAX_ATTEMPTS",
        "CRM_MESSAGING_SMS_TIMEOUT_SECONDS",
    ]


def test_trigger_topics_follow_each_sources_topic() -> None:
    assert MessagingConfig.from_env({}).trigger_topics == (
        "crm.servicedesk.events",
        "crm.sales.events",
        "crm.contacts.events",
    )
    moved = MessagingConfig.from_env({"CRM_SALES_TOPIC": "elsewhere.sales"})
    assert moved.trigger_topics == ("crm.servicedesk.events", "elsewhere.sales", "crm.contacts.events")
    chosen = MessagingConfig.from_env({"CRM_MESSAGING_TRIGGER_TOPICS": " a , b ,"})
    assert chosen.trigger_topics == ("a", "b")
