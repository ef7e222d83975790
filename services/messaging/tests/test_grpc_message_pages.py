"""MessageStatus over the wire: ListContactMessages pages with page_size/page_token (limit still
answers older callers), messages carry Timestamp fields beside their RFC 3339 strings, and bad
arguments are a google.rpc.BadRequest naming every failing field."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from crm.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from crm_messaging.grpc_api import register
from crmkit import rpc, stack
from crmkit.events import parse_time
from crmkit.web.pagination import encode_cursor

from .conftest import World


@pytest.fixture
def stub(world: World) -> Iterator[messaging_pb2_grpc.MessageStatusStub]:
    port = stack.free_port()
    server, _ = rpc.build_server("messaging", port, lambda srv: register(srv, world.desk))
    server.start()
    channel = rpc.channel(f"127.0.0.1:{port}", audience="messaging", caller="contacts")  # as the 360 calls
    yield messaging_pb2_grpc.MessageStatusStub(channel)
    channel.close()
    server.stop(grace=None)


def sent_to(world: World, contact_id: str, count: int) -> list[str]:
    """Queue `count` messages to the contact; their ids, newest first."""
    ids = [world.send(contact_id=contact_id, channel="email", body=f"note {n}").get_json()["id"] for n in range(count)]
    world.messaging.project()
    return ids[::-1]


def bad_fields(stub: messaging_pb2_grpc.MessageStatusStub, **request: object) -> set[str]:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListContactMessages(messaging_pb2.ListContactMessagesRequest(**request), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert len(status.details) == 1 and status.details[0].Unpack(bad_request)
    return {violation.field for violation in bad_request.field_violations}


def test_pages_follow_each_other_newest_first_without_gaps_or_repeats(
    world: World, stub: messaging_pb2_grpc.MessageStatusStub
) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    other = world.contact(first_name="Ali", email="ali@example.com")
    newest_first = sent_to(world, sara["id"], 5)
    sent_to(world, other["id"], 1)  # someone else's message is on no page
    seen, token, pages = [], "", 0
    while True:
        page = stub.ListContactMessages(
            messaging_pb2.ListContactMessagesRequest(contact_id=sara["id"], page_size=2, page_token=token), timeout=5
        )
        seen += [message.id for message in page.messages]
        pages, token = pages + 1, page.next_page_token
        if not token:
            break
    assert seen == newest_first and pages == 3


def test_limit_still_answers_one_page(world: World, stub: messaging_pb2_grpc.MessageStatusStub) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    newest_first = sent_to(world, sara["id"], 3)
    old_caller = stub.ListContactMessages(
        messaging_pb2.ListContactMessagesRequest(contact_id=sara["id"], limit=2), timeout=5
    )
    assert [m.id for m in old_caller.messages] == newest_first[:2] and old_caller.next_page_token
    everything = stub.ListContactMessages(messaging_pb2.ListContactMessagesRequest(contact_id=sara["id"]), timeout=5)
    assert [m.id for m in everything.messages] == newest_first and not everything.next_page_token


def test_a_message_carries_its_times_as_timestamps(world: World, stub: messaging_pb2_grpc.MessageStatusStub) -> None:
    sara = world.contact(first_name="Sara", email="sara@example.com")
    [queued] = sent_to(world, sara["id"], 1)
    unsent = stub.GetMessage(messaging_pb2.GetMessageRequest(message_id=queued), timeout=5)
    assert unsent.queue_time.ToDatetime(tzinfo=UTC) == parse_time(unsent.queued_at)
    assert not unsent.HasField("send_time") and not unsent.HasField("deliver_time")
    world.dispatch()
    world.messaging.project()
    sent = stub.GetMessage(messaging_pb2.GetMessageRequest(message_id=queued), timeout=5)
    assert sent.status == "sent" and sent.send_time.ToDatetime(tzinfo=UTC) == parse_time(sent.sent_at)


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        ({"contact_id": "", "page_size": 101}, {"contact_id", "page_size"}),
        ({"contact_id": "c-1", "limit": -1}, {"limit"}),
        ({"contact_id": "c-1", "limit": 5, "page_size": 10}, {"limit", "page_size"}),
        ({"contact_id": "c-1", "page_token": "not a token!"}, {"page_token"}),
        ({"contact_id": "c-1", "page_token": "bm90LWEtcG9zaXRpb24"}, {"page_token"}),  # base64 of junk
        ({"contact_id": "c-1", "page_token": encode_cursor("9" * 30 + ":x")}, {"page_token"}),  # past int64
        ({"contact_id": "c-1", "page_token": encode_cursor("²:x")}, {"page_token"}),  # a digit int() refuses
    ],
)
def test_bad_page_requests_name_every_bad_field(
    world: World, stub: messaging_pb2_grpc.MessageStatusStub, request_fields: dict[str, object], fields: set[str]
) -> None:
    assert bad_fields(stub, **request_fields) == fields
