"""Routes to tickets' attachments: an upload streamed in, a download streamed out.

Neither holds a whole file. An upload's body is read ``CHUNK_BYTES`` at a time and each piece
goes to tickets as an RPC of its own (base64, as RPC arguments are JSON), which seals and
stores it before the next is read; a download asks for one chunk at a time as the client
reads. So a file's size costs round trips, not memory, and no broker message holds more than a
chunk of it.

The upload is its own request (``POST /v1/tickets/{id}/attachments``, the bytes as the body,
its name in ``?filename=``), answered with its id; a message then names the ids it carries
(``attachment_ids``). An upload no message names within a day is deleted. A retried upload is
a second upload (``Idempotency-Key`` is not read here: a replay would need the whole body to
compare); the one left unnamed goes with the day.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterator
from typing import Any

from werkzeug.wrappers import Request, Response

from gateway import problems, schemas
from gateway.bodies import UPLOAD_BODY_BYTES
from gateway.http import RESOURCES, api, json_response, read_query
from gateway.route import STAFF
from gateway.routes.base import Routes
from services.tickets.contracts import CHUNK_BYTES

BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


class AttachmentRoutes(Routes):
    """Mixed into the gateway service: files on tickets' messages."""

    @api(
        "POST",
        "/v1/tickets/<string:ticket_id>/attachments",
        max_body_bytes=UPLOAD_BODY_BYTES,
        roles=STAFF,
        summary="Upload a file to a ticket, to put on a message (attachment_ids); the body is"
        " the file's bytes, any Content-Type (it is not believed: the type is sniffed)",
        status=201,
        response="AttachmentOut",
        raw_body="the file's bytes, at most LEDGERDESK_ATTACHMENT_MAX_BYTES (10 MiB by default)",
        query="UploadAttachmentV1",
        errors=(404, 409, 413, 422),
    )
    def upload_attachment(self, request: Request, ticket_id: str) -> Response:
        caller = self._caller(request)
        query = read_query(request, schemas.UploadAttachmentV1())
        settings = self.config["LEDGERDESK"]
        limit = settings.attachment_max_bytes
        if request.content_length is not None and request.content_length > limit:
            raise problems.PayloadTooLarge(f"a file may be at most {limit} bytes")
        upload = self.tickets.begin_attachment(caller, ticket_id)
        try:
            for seq, piece in enumerate(_pieces(request)):
                self.tickets.put_attachment_chunk(
                    caller, upload["id"], seq, base64.b64encode(piece).decode("ascii")
                )
            attachment = self.tickets.finish_attachment(caller, upload["id"], query)
        except BaseException:
            # Given up (too large, empty, the client gone): nothing of it is kept.
            self.tickets.discard_attachment(caller, upload["id"])
            raise
        return json_response(
            201,
            attachment,
            {"Location": f"/v1/tickets/{ticket_id}/attachments/{attachment['id']}"},
        )

    @api(
        "GET",
        "/v1/tickets/<string:ticket_id>/attachments/<string:attachment_id>",
        roles=STAFF,
        summary="Download a ticket's file: its sniffed type, Content-Disposition: attachment,"
        " X-Content-Type-Options: nosniff",
        response=BINARY,
        media_type="application/octet-stream",
        errors=(404,),
    )
    def download_attachment(self, request: Request, ticket_id: str, attachment_id: str) -> Response:
        caller = self._caller(request)
        found = self.tickets.attachment_for_download(caller, ticket_id, attachment_id)
        # The access record names the ticket and the file (the path) and whose they are.
        request.environ[RESOURCES] = [found["requester_id"]]
        tickets = self.tickets

        def body() -> Iterator[bytes]:
            for seq in range(found["chunks"]):
                yield base64.b64decode(tickets.attachment_chunk(caller, attachment_id, seq))

        return Response(
            body(),
            status=200,
            content_type=found["content_type"],
            headers={
                "Content-Length": str(found["size"]),
                "Content-Disposition": content_disposition(found["filename"]),
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private, no-store",
            },
        )


def _pieces(request: Request) -> Iterator[bytes]:
    """The body in pieces of ``CHUNK_BYTES`` (the last shorter), read as they come."""
    stream = request.stream
    while True:
        piece = b""
        while len(piece) < CHUNK_BYTES:
            more = stream.read(CHUNK_BYTES - len(piece))
            if not more:
                break
            piece += more
        if not piece:
            return
        yield piece
        if len(piece) < CHUNK_BYTES:
            return


def content_disposition(filename: str) -> str:
    """``attachment`` with the name twice: percent-encoded UTF-8 (RFC 6266 ``filename*``) for
    clients that read it, and an ASCII stand-in (anything else, quotes and backslashes as
    ``_``) for those that do not. No client text reaches the header unencoded."""
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\%;' else "_" for c in filename)
    encoded = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{fallback or 'file'}\"; filename*=UTF-8''{encoded}"
