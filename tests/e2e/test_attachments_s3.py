"""Attachments with the object store chosen (LEDGERDESK_ATTACHMENT_STORE=s3), against the whole
platform running as processes and a real S3-compatible server (moto's): a file round-trips
byte for byte, its chunks are objects under ids only and ciphertext only, the subject's export
reads them back, and the requester's erasure leaves no object under the ticket's prefix."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator

import pytest

from kernel.testing import Infrastructure, wait_until
from services.tickets.chunk_store import S3Chunks
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.helpers import completed, create_contact, file, ok, rows, sign_up
from tests.e2e.test_attachments import download, ticket_of, upload
from tests.support.object_store import new_bucket, s3_env, s3_server  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def bucket(s3_server: str) -> S3Chunks:  # noqa: F811 (the fixture above)
    return new_bucket(s3_server)


@pytest.fixture(scope="module")
def stack(infrastructure: Infrastructure, s3_server: str, bucket: S3Chunks) -> Iterator[Stack]:  # noqa: F811
    with running_stack(infrastructure, **s3_env(s3_server, bucket.bucket)) as running:
        yield running


def test_files_live_in_the_bucket_sealed_and_the_erasure_deletes_the_ticket_prefix(
    stack: Stack, bucket: S3Chunks
):
    signed = sign_up(stack)
    key = signed["api_key"]
    contact = create_contact(stack, key)
    ticket = ticket_of(stack, key, contact["id"])
    marker = secrets.token_hex(16).encode()
    # Three chunks, the last one short.
    data = b"%PDF-1.4 " + marker + secrets.token_bytes(2 * 256 * 1024 + 99)
    name = f"medical-{marker.decode()}.pdf"
    uploaded = ok(upload(stack, key, ticket["id"], data, name), 201)
    ok(
        stack.call(
            "POST",
            f"/v1/tickets/{ticket['id']}/messages",
            key=key,
            json={"body": "your report", "attachment_ids": [uploaded["id"]]},
        ),
        201,
    )
    got = download(stack, key, ticket["id"], uploaded["id"], stream=True)
    assert got.status_code == 200
    assert got.raw.read() == data

    # In the bucket: one object a chunk, named by ids only; nothing in tickets' own table.
    prefix = f"{signed['tenant']['id']}/{ticket['id']}/"
    keys = bucket.keys(prefix)
    assert keys == [f"{prefix}{uploaded['id']}/{seq}" for seq in range(3)]
    assert not any(marker.decode() in k or "medical" in k for k in bucket.keys())
    stored = b"".join(
        bucket.client.get_object(Bucket=bucket.bucket, Key=k)["Body"].read() for k in keys
    )
    assert marker not in stored and data[-64:] not in stored
    of_ticket = (
        "SELECT count(*) FROM attachment_chunks c JOIN attachments a ON a.id = c.attachment_id"
        " WHERE a.ticket_id = %s"
    )
    assert rows(stack, "tickets", of_ticket, ticket["id"])[0][0] == 0

    # The subject's export reads the file back from the bucket.
    access = file(stack, key, {"type": "access", "subject": {"contact_id": contact["id"]}})
    assert completed(stack, key, access["id"])["status"] == "completed"
    doc = ok(stack.call("GET", f"/v1/privacy/requests/{access['id']}/export", key=key))
    [requested] = doc["services"]["tickets"]["tickets_requested"]
    [exported] = requested["messages"][0]["attachments"]
    assert base64.b64decode(exported["content_base64"]) == data

    # The requester's erasure completes only once the store acknowledged the deletes: by then
    # nothing is listed under the ticket's prefix, not a version.
    erasure = file(stack, key, {"type": "erasure", "subject": {"contact_id": contact["id"]}})
    assert completed(stack, key, erasure["id"])["status"] == "completed"
    assert bucket.keys(prefix) == []
    listed = bucket.client.list_object_versions(Bucket=bucket.bucket, Prefix=prefix)
    assert not listed.get("Versions") and not listed.get("DeleteMarkers")
    assert (
        rows(
            stack, "tickets", "SELECT count(*) FROM attachments WHERE ticket_id = %s", ticket["id"]
        )[0][0]
        == 0
    )
    wait_until(
        lambda: download(stack, key, ticket["id"], uploaded["id"]).status_code == 404,
        what="the erased requester's file to be gone",
    )
