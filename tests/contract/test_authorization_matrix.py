"""The authorization matrix: every REST operation and every gRPC method of every service,
against every kind of caller, answers as contract.md's role rules say.

The operations come from the services themselves (each app's `/openapi.json` and its
declared `endpoint_spec`; each proto's descriptors), so a new route or RPC is checked the
day it appears. What each one should need comes from a rule, not from its declaration:
GET reads, every other method writes, lookups over gRPC read, and the few exceptions are
listed below. A route whose declaration disagrees, a route without one, or an RPC that is
in neither the rule nor the exceptions fails here.

"Allowed" means not 401/403 (UNAUTHENTICATED/PERMISSION_DENIED): with made-up ids and
empty bodies the answer is then a 404 or a validation error, and nothing changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory

from crm.contacts.v1 import contacts_pb2
from crm.messaging.v1 import messaging_pb2
from crm.sales.v1 import sales_pb2
from crm.servicedesk.v1 import servicedesk_pb2
from crmkit import auth, keys, rpc, stack
from crmkit.config import slug
from crmkit.service import discover
from crmkit.testing import ServiceHarness, harness

SERVICES = sorted(discover())
PROTOS = {"contacts": contacts_pb2, "sales": sales_pb2, "service-desk": servicedesk_pb2, "messaging": messaging_pb2}

# (method, path) -> access where the HTTP method's rule does not apply; None = public (no token)
REST_EXCEPTIONS: dict[str, dict[tuple[str, str], str | None]] = {
    "contacts": {
        ("POST", "/v1/contacts/{contact_id}/erasure"): "erase",
        # everything every service holds on the person at once (their data subject access request)
        ("GET", "/v1/contacts/{contact_id}/export"): "export",
        # the contact confirming their own details: the signed link is the credential
        ("GET", "/v1/confirmations/{token}"): None,
        ("POST", "/v1/confirmations/{token}"): None,
    },
    "messaging": {
        # renders, changes nothing; with a contact_id the view also asks for contacts:read (tested in
        # services/messaging/tests/test_preview_access.py: the matrix's empty body has none)
        ("POST", "/v1/templates/preview"): "read",
        ("GET", "/v1/unsubscribe/{token}"): None,  # the signed link is the credential
        ("POST", "/v1/unsubscribe/{token}"): None,  # one-click unsubscribe (RFC 8058); GET only asks
        ("POST", "/v1/providers/{provider}/receipts"): None,  # signed by the provider
    },
    "service-desk": {
        ("GET", "/v1/surveys/{token}"): None,
        ("POST", "/v1/surveys/{token}"): None,
        # the SERVQUAL questionnaire's signed link, like the CSAT survey's
        ("GET", "/v1/surveys/servqual/{token}"): None,
        ("POST", "/v1/surveys/servqual/{token}"): None,
        ("POST", "/v1/inbound/sms"): None,
    },  # the SMS gateway's webhook: X-Inbound-Secret
}
PLATFORM_ROUTES = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/static/<path:filename>"}
# gRPC methods whose name does not say "read" (Get…, BatchGet…, List…, Check…, BatchCheck…)
RPC_EXCEPTIONS = {
    "crm.contacts.v1.ContactDirectory/RecordConsent": "write",
    # who wrote to the support mailbox; a stranger becomes a contact (the service desk's token)
    "crm.contacts.v1.ContactDirectory/FindContacts": "read",
    "crm.contacts.v1.ContactDirectory/CreateContact": "write",
    # a person's records for their export: <service>:export (contacts' service token has it)
    "crm.sales.v1.CustomerValue/ExportContactRecords": "export",
    "crm.servicedesk.v1.SupportSummary/ExportContactRecords": "export",
    "crm.messaging.v1.MessageStatus/ExportContactRecords": "export",
}
READ_RPC = re.compile(r"(Batch)?(Get|List|Check)[A-Z]\w*")


@dataclass(frozen=True)
class Caller:
    name: str
    token: str | None  # None: no Authorization at all
    principal: auth.Principal | None  # None: the token must be refused (401 / UNAUTHENTICATED)


def callers(audience: str) -> list[Caller]:
    """No token, each service's read, write and export, contacts:erase, admin, admin for another
    service, and every service's own service token for `audience`."""
    ring = keys.ring()

    def person(*roles: str, aud: str = audience) -> Caller:
        name = ",".join(roles) + ("" if aud == audience else f"@{aud}")
        token = auth.issue(ring, "matrix", list(roles), audience=aud)
        return Caller(name, token, auth.Principal("matrix", frozenset(roles)) if aud == audience else None)

    made = [Caller("no-token", None, None), Caller("garbage", "not-a-jwt", None)]
    made += [person(f"{slug(s)}:{access}") for s in SERVICES for access in ("read", "write", "export")]
    made += [
        person("contacts:erase"),
        person("admin"),
        person("admin", aud=next(slug(s) for s in SERVICES if slug(s) != audience)),
    ]
    for service in SERVICES:
        token = auth.service_token(service, keys.own_key(service), audience)
        made.append(Caller(f"service:{service}", token, auth.verify(ring, token, audience=audience)))
    return made


def expected_rest_access(service: str, method: str, path: str) -> str | None:
    exceptions = REST_EXCEPTIONS.get(service, {})
    if (method, path) in exceptions:
        return exceptions[(method, path)]
    return "read" if method == "GET" else "write"


@pytest.fixture(params=SERVICES)
def subject(
    request: pytest.FixtureRequest, service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServiceHarness]:
    with harness(discover()[request.param], monkeypatch, service_env) as made:
        yield made


def operations(subject: ServiceHarness) -> list[tuple[str, str, str | None]]:
    """(method, OpenAPI path, declared access) of every operation the app serves; a route
    without a declaration is listed with access "undeclared" unless it is a platform route."""
    document = subject.client.get("/openapi.json").get_json()
    found = []
    for rule in subject.app.url_map.iter_rules():
        if rule.rule in PLATFORM_ROUTES or rule.endpoint == "static":
            continue
        declared = getattr(subject.app.view_functions[rule.endpoint], "endpoint_spec", None)
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            access = "undeclared" if declared is None else declared.access
            if declared is not None:  # the document says the same as the declaration
                operation = document["paths"][path][method.lower()]
                assert ("security" in operation) == (access is not None), (method, path)
            found.append((method, path, access))
    return found


def test_every_rest_operation_declares_the_access_its_rule_expects(subject: ServiceHarness) -> None:
    service = subject.spec.name
    wrong = [
        (method, path, access, expected_rest_access(service, method, path))
        for method, path, access in operations(subject)
        if access != expected_rest_access(service, method, path)
    ]
    assert wrong == [], (
        "routes whose declared access (3rd) is not what the rules expect (4th): "
        "fix the route, or add it to REST_EXCEPTIONS with the reason"
    )


def test_every_rest_operation_answers_each_caller_as_the_roles_say(subject: ServiceHarness) -> None:
    audience = subject.runtime.settings.slug
    mismatches = []
    for method, path, access in operations(subject):
        if access is None:
            continue
        url = re.sub(r"\{[^}]+\}", "matrix-no-such-id", path)
        for caller in callers(audience):
            headers = {} if caller.token is None else {"Authorization": f"Bearer {caller.token}"}
            status = subject.client.open(url, method=method, json={}, headers=headers).status_code
            if caller.principal is None:
                expected = "401"
            else:
                expected = "allowed" if caller.principal.may(audience, access) else "403"
            got = str(status) if status in (401, 403) else "allowed"
            if got != expected:
                mismatches.append((method, path, caller.name, expected, status))
    assert mismatches == []


def rpc_methods(service: str) -> list[tuple[str, Any]]:
    """(full method name, method descriptor) of every RPC the service's proto declares."""
    return [
        (f"{svc.full_name}/{method.name}", method)
        for svc in PROTOS[service].DESCRIPTOR.services_by_name.values()
        for method in svc.methods
    ]


def expected_rpc_access(full_name: str) -> str:
    if full_name in RPC_EXCEPTIONS:
        return RPC_EXCEPTIONS[full_name]
    assert READ_RPC.fullmatch(full_name.rsplit("/", 1)[1]), (
        f"{full_name} is neither a lookup by its name nor in RPC_EXCEPTIONS: give it a rule"
    )
    return "read"


def test_every_service_has_its_proto() -> None:
    assert set(PROTOS) == set(SERVICES)


def test_every_rpc_answers_each_caller_as_the_roles_say(subject: ServiceHarness) -> None:
    service, audience = subject.spec.name, subject.runtime.settings.slug
    port = stack.free_port()
    server, _ = rpc.build_server(service, port, lambda srv: subject.spec.servicers(srv, subject.runtime))
    server.start()
    mismatches = []
    try:
        for full_name, method in rpc_methods(service):
            access = expected_rpc_access(full_name)
            request = message_factory.GetMessageClass(method.input_type)()
            for caller in callers(audience):
                code = _call(port, full_name, method, request, caller.token)
                if caller.principal is None:
                    expected = "UNAUTHENTICATED"
                else:
                    expected = "allowed" if caller.principal.may(audience, access) else "PERMISSION_DENIED"
                got = (
                    code.name
                    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
                    else "allowed"
                )
                if got != expected:
                    mismatches.append((full_name, caller.name, expected, code.name))
    finally:
        server.stop(grace=None)
    assert mismatches == []


def _call(port: int, full_name: str, method: Any, request: Any, token: str | None) -> grpc.StatusCode:
    """The status of one call with an empty request (a made-up id: at worst NOT_FOUND or INVALID_ARGUMENT)."""
    target = f"127.0.0.1:{port}"
    with rpc.token_channel(target, token) if token else grpc.insecure_channel(target) as channel:
        response = message_factory.GetMessageClass(method.output_type)
        kind = channel.unary_stream if method.server_streaming else channel.unary_unary
        stub = kind(
            f"/{full_name}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response.FromString,
        )
        try:
            answer = stub(request, timeout=5)
            if method.server_streaming:
                list(answer)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK
