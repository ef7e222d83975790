"""Erasure by crypto-shredding (the export: test_export.py).

After erasure nothing stored, projected or published may reveal the person —
including after the events are replayed to a new topic and the read models rebuilt
with the real `crm replay` and `crm rebuild` commands.
"""

import json
import os
import subprocess
import sys

from kafka import KafkaConsumer

from crmkit import stack
from crmkit.testing import ServiceHarness

SECRETS = ("Shirin", "Farahani", "shirin.farahani@example.com", "+989127654321", "Isfahan")


def raw_topic(bootstrap: str, topic: str) -> bytes:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        return b"\n".join(message.value for message in consumer)
    finally:
        consumer.close()


def database_dump(contacts: ServiceHarness) -> str:
    db = contacts.runtime.db
    return "\n".join(
        json.dumps(list(db[name].find()), default=str, ensure_ascii=False) for name in db.list_collection_names()
    )


def reveals(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [secret for secret in SECRETS if secret.lower() in text.lower()]


def crm(command: list[str], env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "crmkit.cli", *command], env={**os.environ, **env}, check=True, capture_output=True
    )


def test_erasure_leaves_nothing_readable_anywhere_even_after_replay_and_rebuild(
    exporting_contacts: ServiceHarness,
) -> None:
    contacts = exporting_contacts  # the export asks the other services (faked: no records)
    headers = contacts.headers(**{"Idempotency-Key": "shirin-1"})
    shirin = contacts.client.post(
        "/v1/contacts",
        headers=headers,
        json={
            "first_name": "Shirin",
            "last_name": "Farahani",
            "email": "shirin.farahani@example.com",
            "phone": "+98 912 765 4321",
            "attributes": {"city": "Isfahan"},
            "tags": ["vip"],
        },
    ).get_json()
    contacts.client.patch(
        f"/v1/contacts/{shirin['id']}", json={"last_name": "Farahani", "owner": "ana"}, headers=contacts.headers()
    )
    contacts.client.put(
        f"/v1/contacts/{shirin['id']}/consents/email", json={"status": "granted"}, headers=contacts.headers()
    )
    contacts.project()
    settings = contacts.runtime.settings
    contacts.runtime.flush()
    # personal fields never travel in clear text, not even before erasure
    assert reveals(raw_topic(settings.kafka_bootstrap, settings.topic)) == []
    assert reveals(database_dump(contacts)) != []  # the read model and idempotency store hold them

    erased = contacts.client.post(f"/v1/contacts/{shirin['id']}/erasure", json={}, headers=contacts.headers())
    assert erased.status_code == 200
    body = erased.get_json()
    assert body["status"] == "erased" and body["first_name"] is None and body["email"] is None
    assert body["tags"] == ["vip"]  # what is not personal stays for the statistics
    contacts.project()
    assert reveals(database_dump(contacts)) == []
    for path in ("", "/history", "/export"):
        response = contacts.client.get(f"/v1/contacts/{shirin['id']}{path}", headers=contacts.headers())
        assert response.status_code == 200 and reveals(response.get_data()) == []

    new_topic = f"{settings.topic}.new-cluster"
    stack.ensure_topics(settings.kafka_bootstrap, [new_topic])
    env = {"CRM_CONTACTS_TOPIC": new_topic}
    crm(["replay", "contacts"], env)
    replayed = raw_topic(settings.kafka_bootstrap, new_topic)
    assert shirin["id"].encode() in replayed and b"ContactErased" in replayed
    assert reveals(replayed) == []
    crm(["rebuild", "contacts"], env)
    assert reveals(database_dump(contacts)) == []
    rebuilt = contacts.runtime.db["contacts"].find_one({"_id": shirin["id"]})
    assert rebuilt["status"] == "erased" and rebuilt["first_name"] is None

    again = contacts.client.post(f"/v1/contacts/{shirin['id']}/erasure", json={}, headers=contacts.headers())
    assert again.status_code == 200  # repeating an erasure is harmless


def test_erasing_a_survivor_erases_the_records_merged_into_it(contacts: ServiceHarness) -> None:
    a = contacts.client.post(
        "/v1/contacts",
        json={"first_name": "Shirin", "email": "shirin.farahani@example.com"},
        headers=contacts.headers(),
    ).get_json()
    b = contacts.client.post(
        "/v1/contacts", json={"last_name": "Farahani", "phone": "+989127654321"}, headers=contacts.headers()
    ).get_json()
    contacts.client.post(f"/v1/contacts/{a['id']}/merge", json={"duplicate_id": b["id"]}, headers=contacts.headers())
    # asking with the merged id erases the person, i.e. the survivor and every merged record
    response = contacts.client.post(f"/v1/contacts/{b['id']}/erasure", json={}, headers=contacts.headers())
    assert response.status_code == 200 and response.get_json()["id"] == a["id"]
    contacts.project()
    assert reveals(database_dump(contacts)) == []
    history = contacts.client.get(f"/v1/contacts/{b['id']}/history", headers=contacts.headers())
    assert reveals(history.get_data()) == []


def test_erasure_needs_the_erase_role_not_just_write(contacts: ServiceHarness) -> None:
    person = contacts.client.post(
        "/v1/contacts", json={"first_name": "Mina", "email": "mina@example.com"}, headers=contacts.headers()
    ).get_json()
    url = f"/v1/contacts/{person['id']}/erasure"
    refused = contacts.client.post(url, json={}, headers=contacts.headers("contacts:write"))
    assert refused.status_code == 403 and "contacts:erase" in refused.get_json()["detail"]
    assert (
        contacts.client.get(f"/v1/contacts/{person['id']}", headers=contacts.headers()).get_json()["first_name"]
        == "Mina"
    )  # nothing was erased
    erased = contacts.client.post(url, json={}, headers=contacts.headers("contacts:erase"))
    assert erased.status_code == 200 and erased.get_json()["first_name"] is None
