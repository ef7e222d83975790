"""The service desk's settings (crm_servicedesk/settings.py): defaults, and every bad variable named."""

from __future__ import annotations

import pytest

from crm_servicedesk.settings import InboundConfig, ServiceDeskSettings
from crmkit.settings import SettingsError, load


def test_defaults() -> None:
    knobs = load(ServiceDeskSettings.read, {})
    assert (knobs.sweep_seconds, knobs.recompute_seconds) == (5, 10)
    assert knobs.inbound == InboundConfig("127.0.0.1", 2525, 10485760, "question", 72, "")


def test_every_bad_variable_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        load(
            ServiceDeskSettings.read,
            {
                "CRM_SERVICEDESK_SWEEP_SECONDS": "-5",
                "CRM_SERVICEDESK_INBOUND_TYPE": "rant",
                "CRM_SERVICEDESK_INBOUND_SMTP_PORT": "smtp",
            },
        )
    assert [name for name, _ in caught.value.problems] == [
        "CRM_SERVICEDESK_SWEEP_SECONDS",
        "CRM_SERVICEDESK_INBOUND_SMTP_PORT",
        "CRM_SERVICEDESK_INBOUND_TYPE",
    ]
