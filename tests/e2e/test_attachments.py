"""Attachments over real HTTP, against the whole platform running as processes: a file uploaded
to a ticket, put on a message, downloaded byte for byte with the type its bytes show (never the
client's claim), another tenant's ids not found, the limits, every download an access record,
the subject's export, and gone with the requester's erasure."""

from __future__ import annotations

import base64
import hashlib
import secrets
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from kernel.testing import Infrastructure, wait_until
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.helpers import (
    access_log,
    assert_problem,
    completed,
    create_contact,
    file,
    ok,
    rows,
    sign_up,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + secrets.token_bytes(64)
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
MAX_BYTES = 600_000  # a little over two chunks


@pytest.fixture(scope="module")
def stack(infrastructure: Infrastructure) -> Iterator[Stack]:
    with running_stack(
        infrastructure,
        LEDGERDESK_ATTACHMENT_MAX_BYTES=str(MAX_BYTES),
        LEDGERDESK_ATTACHMENTS_PER_MESSAGE="2",
        LEDGERDESK_ATTACHMENT_TICKET_BYTES=str(2 * MAX_BYTES),
    ) as running:
        yield running


def ticket_of(stack: Stack, key: str, contact_id: str | None = None) -> dict[str, Any]:
    requester = contact_id or create_contact(stack, key)["id"]
    body = {"subject": "Broken lamp", "body": "see the photo", "requester_id": requester}
    return ok(stack.call("POST", "/v1/tickets", key=key, json=body), 201)


def upload(
    stack: Stack, key: str, ticket_id: str, data: bytes, filename: str, claimed: str = "text/html"
) -> requests.Response:
    return stack.call(
        "POST",
        f"/v1/tickets/{ticket_id}/attachments",
        key=key,
        params={"filename": filename},
        data=data,
        headers={"Content-Type": claimed},
    )


def download(stack: Stack, key: str, ticket_id: str, attachment_id: str, **kwargs: Any):
    return stack.call(
        "GET", f"/v1/tickets/{ticket_id}/attachments/{attachment_id}", key=key, **kwargs
    )


def test_a_file_round_trips_byte_for_byte_on_a_message(stack):
    key = sign_up(stack)["api_key"]
    ticket = ticket_of(stack, key)
    # Three chunks, the last one short: the bytes come back exactly, whatever the pieces.
    data = secrets.token_bytes(2 * 256 * 1024 + 1234)
    name = 'Reçu n°1 "final".bin'
    uploaded = ok(upload(stack, key, ticket["id"], data, name, "image/png"), 201)
    assert uploaded["size"] == len(data)
    assert uploaded["sha256"] == hashlib.sha256(data).hexdigest()
    assert uploaded["filename"] == name
    assert uploaded["content_type"] == "application/octet-stream"  # random bytes: no claim kept

    message = ok(
        stack.call(
            "POST",
            f"/v1/tickets/{ticket['id']}/messages",
            key=key,
            json={"body": "Here it is", "attachment_ids": [uploaded["id"]]},
        ),
        201,
    )
    assert message["attachments"] == [uploaded]
    shown = ok(stack.call("GET", f"/v1/tickets/{ticket['id']}", key=key))
    [on_message] = [m for m in shown["messages"] if m["id"] == message["id"]]
    assert on_message["attachments"] == [uploaded]  # metadata only
    assert "content_base64" not in str(shown)

    got = download(stack, key, ticket["id"], uploaded["id"], stream=True)
    assert got.status_code == 200
    assert got.raw.read() == data
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    disposition = got.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''" + urllib.parse.quote(name, safe="") in disposition
    assert '"final"' not in disposition  # the ASCII stand-in has no quote of the client's

    # The same upload cannot go on a second message.
    again = stack.call(
        "POST",
        f"/v1/tickets/{ticket['id']}/messages",
        key=key,
        json={"body": "again", "attachment_ids": [uploaded["id"]]},
    )
    assert "attachment_ids" in assert_problem(again, 422)["errors"]


def test_the_type_is_sniffed_from_the_bytes_never_taken_from_the_client(stack):
    key = sign_up(stack)["api_key"]
    ticket = ticket_of(stack, key)
    png = ok(upload(stack, key, ticket["id"], PNG, "photo.html", "text/html"), 201)
    assert png["content_type"] == "image/png"
    page = ok(upload(stack, key, ticket["id"], HTML, "page.html", "text/html"), 201)
    assert page["content_type"] == "text/plain; charset=utf-8"

    got = download(stack, key, ticket["id"], png["id"])
    assert got.headers["Content-Type"] == "image/png" and got.content == PNG
    got = download(stack, key, ticket["id"], page["id"])
    assert "html" not in got.headers["Content-Type"]
    assert got.headers["Content-Type"].startswith("text/plain") and got.content == HTML
    assert got.headers["X-Content-Type-Options"] == "nosniff"


def test_another_tenants_ids_are_not_found(stack):
    key = sign_up(stack)["api_key"]
    ticket = ticket_of(stack, key)
    mine = ok(upload(stack, key, ticket["id"], PNG, "mine.png"), 201)
    other = sign_up(stack)["api_key"]
    their_ticket = ticket_of(stack, other)
    assert_problem(download(stack, other, ticket["id"], mine["id"]), 404)
    assert_problem(download(stack, other, their_ticket["id"], mine["id"]), 404)
    # Nor can they upload to my ticket, or put my upload on their message.
    assert_problem(upload(stack, other, ticket["id"], PNG, "x.png"), 404)
    taken = stack.call(
        "POST",
        f"/v1/tickets/{their_ticket['id']}/messages",
        key=other,
        json={"body": "mine now", "attachment_ids": [mine["id"]]},
    )
    assert_problem(taken, 422)
    # And an id that names nothing, or is not an id, is not found either.
    assert_problem(download(stack, key, ticket["id"], "not-an-id"), 404)
    assert_problem(download(stack, key, ticket["id"], ticket["id"]), 404)
    assert download(stack, key, ticket["id"], mine["id"]).content == PNG


def test_limits_and_bad_input_are_refused_and_leave_nothing(stack):
    key = sign_up(stack)["api_key"]
    ticket = ticket_of(stack, key)
    before = rows(stack, "tickets", "SELECT count(*) FROM attachment_chunks")[0][0]

    # Too big, known from the length before a byte is read, and found while streaming.
    assert_problem(upload(stack, key, ticket["id"], b"x" * (MAX_BYTES + 1), "big.txt"), 413)

    def unsized() -> Iterator[bytes]:
        for _ in range(4):
            yield b"y" * 200_000

    streamed = stack.call(
        "POST",
        f"/v1/tickets/{ticket['id']}/attachments",
        key=key,
        params={"filename": "big.txt"},
        data=unsized(),  # chunked: no Content-Length
    )
    assert streamed.status_code in (413, 422), streamed.text
    # Empty, a path for a name, no name, a control character.
    assert_problem(upload(stack, key, ticket["id"], b"", "empty.txt"), 422)
    for name in ("../etc/passwd", "a\\b.txt", "..", "bell\x07.txt"):
        assert (
            "filename" in assert_problem(upload(stack, key, ticket["id"], PNG, name), 422)["errors"]
        )
    nameless = stack.call("POST", f"/v1/tickets/{ticket['id']}/attachments", key=key, data=PNG)
    assert_problem(nameless, 422)
    # Nothing of any of them was kept.
    assert rows(stack, "tickets", "SELECT count(*) FROM attachment_chunks")[0][0] == before
    held = "SELECT count(*) FROM attachments WHERE ticket_id = %s"
    assert rows(stack, "tickets", held, ticket["id"])[0][0] == 0

    # A card number in a name is cut to its last four digits.
    carded = ok(upload(stack, key, ticket["id"], PNG, "card 4111 1111 1111 1111.png"), 201)
    assert carded["filename"] == "card [card ending 1111].png"

    # Files per message, and bytes per ticket (uploads not yet on a message count).
    ids = [ok(upload(stack, key, ticket["id"], PNG, f"{i}.png"), 201)["id"] for i in range(2)]
    three = stack.call(
        "POST",
        f"/v1/tickets/{ticket['id']}/messages",
        key=key,
        json={"body": "three files", "attachment_ids": [*ids, carded["id"]]},
    )
    assert "attachment_ids" in assert_problem(three, 422)["errors"]
    big = b"z" * (MAX_BYTES - 10)
    ok(upload(stack, key, ticket["id"], big, "one.bin"), 201)
    assert_problem(upload(stack, key, ticket["id"], big, "two.bin"), 413)


def test_every_download_is_an_access_record_naming_ticket_file_and_requester(stack):
    key = sign_up(stack)["api_key"]
    contact = create_contact(stack, key)
    ticket = ticket_of(stack, key, contact["id"])
    uploaded = ok(upload(stack, key, ticket["id"], PNG, "lamp.png"), 201)
    agent = f"AttachmentReader/{secrets.token_hex(4)}"
    with access_log(stack) as log:
        got = download(stack, key, ticket["id"], uploaded["id"], headers={"User-Agent": agent})
        assert got.status_code == 200
        record = log.collect({agent})[agent]["payload"]
    assert {ticket["id"], uploaded["id"], contact["id"]} <= set(record["resource_ids"])
    assert record["status"] == 200


def test_the_export_holds_the_files_and_the_erasure_ends_them(stack):
    key = sign_up(stack)["api_key"]
    contact = create_contact(stack, key)
    ticket = ticket_of(stack, key, contact["id"])
    marker = secrets.token_hex(16).encode()
    data = b"%PDF-1.4 " + marker + secrets.token_bytes(300_000)
    uploaded = ok(upload(stack, key, ticket["id"], data, "invoice.pdf"), 201)
    assert uploaded["content_type"] == "application/pdf"
    ok(
        stack.call(
            "POST",
            f"/v1/tickets/{ticket['id']}/messages",
            key=key,
            json={"body": "your invoice", "attachment_ids": [uploaded["id"]]},
        ),
        201,
    )
    # An internal note's file is staff's own: not in the requester's export.
    note_file = ok(upload(stack, key, ticket["id"], PNG, "note.png"), 201)
    ok(
        stack.call(
            "POST",
            f"/v1/tickets/{ticket['id']}/messages",
            key=key,
            json={"body": "staff only", "internal": True, "attachment_ids": [note_file["id"]]},
        ),
        201,
    )

    access = file(stack, key, {"type": "access", "subject": {"contact_id": contact["id"]}})
    assert completed(stack, key, access["id"])["status"] == "completed"
    doc = ok(stack.call("GET", f"/v1/privacy/requests/{access['id']}/export", key=key))
    [requested] = doc["services"]["tickets"]["tickets_requested"]
    [reply] = requested["messages"]
    [exported] = reply["attachments"]
    assert {k: exported[k] for k in uploaded} == uploaded
    assert base64.b64decode(exported["content_base64"]) == data
    # (Staff's reads of it are the audit's part, which names what was read.)
    assert note_file["id"] not in str(doc["services"]["tickets"]), doc

    erasure = file(stack, key, {"type": "erasure", "subject": {"contact_id": contact["id"]}})
    assert completed(stack, key, erasure["id"])["status"] == "completed"
    wait_until(
        lambda: download(stack, key, ticket["id"], uploaded["id"]).status_code == 404,
        what="the erased requester's file to be gone",
    )
    of_ticket = "SELECT count(*) FROM attachments WHERE ticket_id = %s"
    assert rows(stack, "tickets", of_ticket, ticket["id"])[0][0] == 0
    chunks = (
        "SELECT count(*) FROM attachment_chunks c JOIN attachments a ON a.id = c.attachment_id"
        " WHERE a.ticket_id = %s"
    )
    assert rows(stack, "tickets", chunks, ticket["id"])[0][0] == 0
    # The ticket takes no new file either: its key is gone.
    assert_problem(upload(stack, key, ticket["id"], PNG, "late.png"), 409)
