"""A Python client generated from the served OpenAPI document (openapi-python-client), driven
through one flow against the running platform: sign up, a contact, a ticket read back, and
problems parsed into the document's Problem.

The client is generated here, into a temporary directory, from the document the gateway
serves: a document a generator cannot turn into working code fails this test.
"""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.e2e.conftest import SIGNUP, Stack

PACKAGE = "ledgerdesk_client"


@pytest.fixture(scope="module")
def client_package(stack: Stack, tmp_path_factory) -> Iterator[ModuleType]:
    home = tmp_path_factory.mktemp("generated")
    document = home / "openapi.json"
    answer = stack.call("GET", "/v1/openapi.json")
    assert answer.status_code == 200
    document.write_text(json.dumps(answer.json()))
    generator = Path(sys.executable).with_name("openapi-python-client")
    run = subprocess.run(
        [str(generator), "generate", "--path", str(document), "--meta", "none"]
        + ["--output-path", str(home / PACKAGE)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=home,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(home))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(home))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _load(package: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{package}")


def test_a_flow_through_the_generated_client(stack: Stack, client_package: ModuleType):
    models = _load("models")
    current_policy = _load("api.policies.current_policy")
    sign_up = _load("api.signup.sign_up")
    create_contact = _load("api.contacts.create_contact")
    create_ticket = _load("api.tickets.create_ticket")
    get_ticket = _load("api.tickets.get_ticket")

    public = client_package.Client(base_url=stack.url)
    policy = current_policy.sync(client=public)
    assert isinstance(policy, models.PolicyOut)

    signed = sign_up.sync_detailed(
        client=public,
        body=models.SignUpV1(
            company="Generated Client Ltd",
            region=models.SignUpV1Region(SIGNUP["region"]),
            admin=models.SignUpAdmin(name="Grace Hopper", email="grace@example.com"),
            age_confirmed=True,
            accept_policy_version=policy.version,
        ),
    )
    assert signed.status_code == 201, signed.content
    assert isinstance(signed.parsed, models.SignUpOut)
    assert signed.parsed.agent.email == "grace@example.com" and signed.parsed.api_key

    admin = client_package.AuthenticatedClient(base_url=stack.url, token=signed.parsed.api_key)
    contact = create_contact.sync(
        client=admin, body=models.CreateContactV1(name="Ada Lovelace", email="ada@example.com")
    )
    assert isinstance(contact, models.ContactOut) and contact.email == "ada@example.com"

    opened = create_ticket.sync(
        client=admin,
        body=models.CreateTicketV1(
            subject="Refund for order 1042",
            body="It arrived damaged.",
            requester_id=contact.id,
            tags=["refund"],
        ),
        idempotency_key=str(uuid.uuid4()),
    )
    assert isinstance(opened, models.TicketOut)

    read = get_ticket.sync_detailed(str(opened.id), client=admin)
    assert read.status_code == 200
    ticket = read.parsed
    assert isinstance(ticket, models.TicketDetailOut)
    assert (ticket.id, ticket.subject, ticket.requester_id) == (
        opened.id,
        "Refund for order 1042",
        contact.id,
    )
    assert ticket.tags == ["refund"] and ticket.status.value == "new"
    assert ticket.version == opened.version

    # An upload: bytes, sent as the document's octet-stream.
    upload_attachment = _load("api.tickets.upload_attachment")
    types = _load("types")
    uploaded = upload_attachment.sync(
        str(opened.id),
        client=admin,
        body=types.File(payload=io.BytesIO(b"order 1042, damaged"), file_name="photo.txt"),
        filename="photo.txt",
    )
    assert isinstance(uploaded, models.AttachmentOut) and uploaded.filename == "photo.txt"

    # A problem is parsed as the document's Problem: its kind, and the request it names.
    missing = get_ticket.sync_detailed(str(uuid.uuid4()), client=admin)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Problem)
    assert missing.parsed.type_ == "/docs/problems#not-found"
    assert str(missing.parsed.request_id) == missing.headers["X-Request-Id"]

    refused = create_contact.sync_detailed(
        client=admin, body=models.CreateContactV1(name="Nobody", email="not an address")
    )
    assert refused.status_code == 422
    assert isinstance(refused.parsed, models.Problem)
    assert refused.parsed.type_ == "/docs/problems#validation-failed"
    assert "email" in refused.parsed.errors.to_dict()
