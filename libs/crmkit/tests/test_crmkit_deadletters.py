"""Dead letters: who owns a topic, what is an outage, what a parked record keeps, readiness.

The runner's behaviour through Kafka is in test_crmkit_projector.py; `crm deadletters`
against a real service is in tests/contract/test_poison_events.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest
from pymongo.database import Database
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from crmkit import stack
from crmkit.config import Ports, ProjectionPolicy, Settings, topic_of, topic_owner
from crmkit.deadletters import DeadLetters, ForeignEvent, NotACrmEvent, describe, inspect, is_transient
from crmkit.directory import ReactionsFailed
from crmkit.errors import NotFound, Unavailable, ValidationFailed
from crmkit.events import RecordedEvent, new_id, utcnow
from crmkit.projector import STATUS_COLLECTION, Progress
from crmkit.runtime import Runtime
from crmkit.testing import Servers
from crmkit.web import create_app


def event(service: str = "contacts", **data: object) -> RecordedEvent:
    return RecordedEvent(
        id=new_id(),
        service=service,
        stream_id=new_id(),
        aggregate_type="contact",
        version=1,
        type="ContactUpdated",
        schema_version=1,
        data=dict(data),
        time=utcnow(),
        actor="system",
        correlation_id=new_id(),
        causation_id=None,
    )


class TestTopics:
    def test_a_service_topic_follows_its_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("CRM_SERVICEDESK_TOPIC", raising=False)
        assert topic_of("service-desk") == "crm.servicedesk.events"
        monkeypatch.setenv("CRM_SERVICEDESK_TOPIC", "prod.desk")
        assert topic_of("service-desk") == topic_of("servicedesk") == "prod.desk"

    def test_the_owner_of_a_topic_is_the_service_it_belongs_to(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("CRM_SALES_TOPIC", raising=False)
        monkeypatch.setenv("CRM_CONTACTS_TOPIC", "t.people")
        assert topic_owner("crm.sales.events") == "sales"
        assert topic_owner("t.people") == "contacts"
        assert topic_owner("crm.contacts.events") is None  # contacts moved away: nobody publishes there
        assert topic_owner("audit.log") is None
        monkeypatch.setenv("CRM_SALES_TOPIC", "t.people")
        assert topic_owner("t.people") is None  # two services on one topic: no single owner


class TestInspect:
    def test_an_event_of_the_topic_owner_is_accepted(self) -> None:
        mine = event()
        assert inspect(mine.to_bytes(), "contacts") == mine
        assert inspect(event("sales").to_bytes(), None).service == "sales"  # a topic no service owns

    @pytest.mark.parametrize(
        "forged",
        [
            event("sales").to_cloudevent(),  # another service's type
            {**event().to_cloudevent(), "source": "crm/sales"},  # another service's source
            {**event().to_cloudevent(), "source": None},
        ],
    )
    def test_a_record_of_another_service_is_foreign(self, forged: dict) -> None:
        with pytest.raises(ForeignEvent, match="belongs to contacts"):
            inspect(json.dumps(forged).encode(), "contacts")

    @pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", b"5", b'{"type": "crm.contacts.X.v1"}', b"[]"])
    def test_what_is_not_a_crm_event_is_refused(self, raw: bytes) -> None:
        with pytest.raises(NotACrmEvent):
            inspect(raw, "contacts")


class TestOutages:
    @pytest.mark.parametrize(
        "error",
        [
            Unavailable("contacts away"),
            AutoReconnect("primary gone"),
            ServerSelectionTimeoutError("no server"),
            ConnectionRefusedError(),
            TimeoutError(),
            OperationFailure("retry me", details={"errorLabels": ["RetryableWriteError"]}),
        ],
    )
    def test_a_dependency_away_is_an_outage(self, error: Exception) -> None:
        assert is_transient(error)

    def test_an_outage_wrapped_in_another_error_is_still_one(self) -> None:
        try:
            try:
                raise AutoReconnect("gone")
            except AutoReconnect as exc:
                raise RuntimeError("could not fold") from exc
        except RuntimeError as wrapped:
            assert is_transient(wrapped)

    def test_gathered_errors_are_an_outage_only_when_every_one_is(self) -> None:
        assert is_transient(ReactionsFailed({"a": Unavailable("away"), "b": AutoReconnect("gone")}))
        assert not is_transient(ReactionsFailed({"a": Unavailable("away"), "b": KeyError("survivor_id")}))
        assert is_transient(ExceptionGroup("hooks", [Unavailable("away")]))
        assert not is_transient(ExceptionGroup("hooks", [Unavailable("away"), ValueError("bad")]))

    def test_grpc_codes_tell_outages_from_answers(self) -> None:
        class Rpc(grpc.RpcError):
            def __init__(self, code: grpc.StatusCode) -> None:
                self._code = code

            def code(self) -> grpc.StatusCode:
                return self._code

        assert is_transient(Rpc(grpc.StatusCode.UNAVAILABLE))
        assert not is_transient(Rpc(grpc.StatusCode.INVALID_ARGUMENT))

    @pytest.mark.parametrize(
        "error",
        [
            KeyError("changes"),
            ValueError("bad"),
            NotFound("no contact"),
            ValidationFailed("bad"),
            DuplicateKeyError("dup"),
            BulkWriteError({"writeErrors": []}),
            OperationFailure("bad query"),
        ],
    )
    def test_what_is_wrong_with_the_event_is_not_an_outage(self, error: Exception) -> None:
        assert not is_transient(error)


def test_an_error_keeps_its_class_and_message_without_the_events_values() -> None:
    subject = event(first_name="Sara", address={"city": "Tehran"}, tags=["vip-gold"], n=1)
    error = ValueError("Sara of Tehran (vip-gold) has no id")
    assert describe(error, subject) == {"class": "ValueError", "message": "*** of *** (***) has no id"}
    assert describe(KeyError("changes"), None) == {"class": "KeyError", "message": "'changes'"}


def test_the_back_off_doubles_up_to_its_cap() -> None:
    policy = ProjectionPolicy(attempts=3, first_delay=0.5, max_delay=4)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5, 10_000)] == [0.5, 1, 2, 4, 4, 4]


def test_the_policy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_PROJECTION_ATTEMPTS", "5")
    monkeypatch.setenv("CRM_PROJECTION_STALL_SECONDS", "120")
    monkeypatch.setenv("CRM_PROJECTION_FETCH_WAIT_MS", "40")
    policy = ProjectionPolicy.from_env()
    assert (policy.attempts, policy.stall_seconds, policy.fetch_wait_ms) == (5, 120, 40)
    assert ProjectionPolicy().fetch_wait_ms == 100  # not the client's 500: a write shows in its list sooner


# ---- the api's /readyz reads what the worker reports -----------------------------


@pytest.fixture
def runtime(servers: Servers, db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("CRM_JWT_SECRET", "test-secret-for-the-deadletter-tests")
    topic = "t.kit.ready." + new_id()[-12:]
    stack.ensure_topics(servers.kafka_bootstrap, [topic], partitions=1)
    subject = Runtime(
        Settings(
            service="widgets",
            slug="widgets",
            kafka_bootstrap=servers.kafka_bootstrap,
            group_prefix="crm",
            mongo_url=servers.mongo_url,
            database=db.name,
            topic=topic,
            ports=Ports(0, 0, 0),
            log_level="WARNING",
            environment="test",
        )
    )
    yield subject
    subject.close()


def test_the_api_readyz_names_a_stalled_projection_and_stays_in_service(runtime: Runtime, db: Database) -> None:
    client = create_app(runtime, [], title="Widgets", description="test").test_client()
    healthy = Progress("widgets", "companies", db[STATUS_COLLECTION], DeadLetters.of(db), stall_seconds=60)
    healthy.update(lag=0, advanced=True, failure=None)
    assert client.get("/readyz").get_json()["status"] == "ready"

    stuck = Progress("widgets", "contacts", db[STATUS_COLLECTION], DeadLetters.of(db), stall_seconds=60)
    stuck.update(lag=4, advanced=False, failure=Unavailable("contacts away"))
    stuck.last_advance -= timedelta(minutes=5)
    stuck.heartbeat()
    response = client.get("/readyz")
    assert response.status_code == 200  # stale reads, not an outage: the pods stay in service
    body = response.get_json()
    assert body["status"] == "degraded" and "contacts" in body["detail"] and "companies" not in body["detail"]
    states = {state["name"]: state for state in body["projections"]}
    assert states["contacts"]["state"] == "degraded" and states["contacts"]["lag"] == 4
    assert states["contacts"]["failing"] == "Unavailable" and states["companies"]["state"] == "ok"
