"""`crm rebuild` and `crm replay` on a real service: totals, rate and ETA when a person
watches (stderr is a terminal), a start and a summary line per piece of work otherwise."""

import io
import sys

import pytest

from crm_contacts.app import SERVICE
from crmkit import cli
from crmkit.testing import ServiceHarness, harness


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def contacts(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    with harness(SERVICE, monkeypatch, service_env) as subject:
        headers = subject.headers()
        for name in ("Sara", "Reza", "Shirin"):
            assert subject.client.post("/v1/contacts", json={"first_name": name}, headers=headers).status_code == 201
        yield subject


def run(monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, *argv: str) -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    assert cli.main(list(argv)) == 0
    return stream.getvalue()


def own_projections(contacts: ServiceHarness) -> list[str]:
    """The projections a rebuild reads the service's own three stored events for."""
    own = contacts.runtime.settings.topic
    return [p.name for p in contacts.spec.projections(contacts.runtime) if own in p.topics]


def test_on_a_terminal_rebuild_and_replay_show_totals_rate_and_eta(
    contacts: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = contacts.runtime.store.count()
    shown = run(monkeypatch, Terminal(), "rebuild", "contacts")
    names = own_projections(contacts)
    assert names
    for name in names:
        assert f"\rrebuild {name}: {stored}/{stored} events (100%)" in shown
        assert f"rebuilt {name} from {stored} events in " in shown
    assert shown.count("ETA ") >= len(names) and "events/s" in shown
    replayed = run(monkeypatch, Terminal(), "replay", "contacts")
    assert f"\rreplay contacts: 0/{stored} events (0%)" in replayed
    assert f"\rreplay contacts: {stored}/{stored} events (100%)" in replayed and "ETA 0:00" in replayed
    assert f"replayed {stored} events of contacts in " in replayed


def test_in_a_log_rebuild_and_replay_write_a_start_and_a_summary_line_each(
    contacts: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = contacts.runtime.store.count()
    shown = run(monkeypatch, io.StringIO(), "rebuild", "contacts")
    projections = contacts.spec.projections(contacts.runtime)
    mine = [line for line in shown.splitlines() if line.startswith(("rebuild ", "rebuilt "))]
    assert len(mine) == 2 * len(projections)
    assert "\r" not in shown and "ETA" not in shown and "events/s)" in shown
    for name in own_projections(contacts):
        assert f"rebuild {name}: {stored} events to go" in mine
    replayed = run(monkeypatch, io.StringIO(), "replay", "contacts")
    lines = [line for line in replayed.splitlines() if "replay" in line]
    assert lines[0] == f"replay contacts: {stored} events to go"
    assert lines[1].startswith(f"replayed {stored} events of contacts in ") and len(lines) == 2
    assert "\r" not in replayed and "ETA" not in replayed
