"""The router in front of the region cells: a plain HTTP reverse proxy.

Each region is a cell, a whole platform (every service and its gateway) with databases and a
RabbitMQ vhost of its own. The router sends each request to one cell's gateway:

- a request whose API key names a region (``ldk_<region>_...``, ``kernel.crypto.apikeys``) to
  that region's cell, without a lookup; a key naming a region that has no cell is refused;
- a sign-up to the cell of the region in its body, recording tenant -> region in the directory
  (``gateway.directory``) from the cell's answer; a region without a cell is refused;
- mail to a support address (``<tenant id>@<mail domain>``, on the mail in port) to the
  listener of the tenant's cell, found in the directory (``gateway.mail_router``);
- anything else (keys issued before regions were written into them, the operator's token, the
  OpenAPI document, ``/docs``, the console's files, ``/healthz``) to the region named by the
  ``X-Ledgerdesk-Region`` header, else to the default cell (the first of ``LEDGERDESK_CELLS``).

Status codes, headers (``X-Request-Id`` among them) and bodies pass through as they are, bodies
streamed both ways. The router's own refusals are problem+json, as the gateway's are. It logs
ids and routing only: never a path, a query, a body or a key.

    python -m gateway.router      # on LEDGERDESK_GATEWAY_HOST:PORT, to LEDGERDESK_CELLS
"""

from __future__ import annotations

import http.client
import json
import logging
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gateway import directory as directory_module
from gateway import mail_router
from gateway.problems import (
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    REQUEST_ID,
    SERVICE_UNAVAILABLE,
    UNAUTHORIZED,
    VALIDATION_FAILED,
    Kind,
)
from kernel.config import ConfigurationError, Settings
from kernel.crypto import apikeys

log = logging.getLogger("gateway.router")

REGION_HEADER = "X-Ledgerdesk-Region"
SIGNUP = "/v1/signup"
# A sign-up's body is read whole (its region chooses the cell): the gateway's own limit for it
# is far below this.
SIGNUP_MAX_BYTES = 64 * 1024
CHUNK = 64 * 1024
# A refused request's body is read and dropped up to this size before the problem is sent.
DRAIN_BYTES = 1024 * 1024
# Hop-by-hop headers (RFC 9110, 7.6.1) end at the router; the rest pass as they are.
HOP_BY_HOP = frozenset(
    {
        # Answered by the router itself (http.server sends the 100 Continue): the cell is sent
        # the body without waiting.
        "expect",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class Refused(Exception):
    """The router answers itself: a problem of ``kind``."""

    def __init__(self, kind: Kind, detail: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.errors = kind, detail, errors


class Router:
    """Which cell takes a request; the directory of tenants' regions."""

    def __init__(self, cells: dict[str, str], directory: directory_module.Directory | None):
        if not cells:
            raise ConfigurationError("LEDGERDESK_CELLS names no cell: the router has nowhere to go")
        self.cells = dict(cells)
        self.default = next(iter(self.cells))
        self.directory = directory

    def cell_of_key(self, authorization: str) -> str | None:
        """The region a bearer key names; None when it names none."""
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        region = apikeys.region_of(credential.strip())
        if region is not None and region not in self.cells:
            raise Refused(UNAUTHORIZED, "the key names a region this deployment does not serve")
        return region

    def cell_of_header(self, value: str | None) -> str | None:
        if not value:
            return None
        if value not in self.cells:
            raise Refused(
                VALIDATION_FAILED,
                f"{REGION_HEADER} names a region this deployment does not serve",
                {REGION_HEADER: [self._one_of()]},
            )
        return value

    def cell_of_signup(self, body: bytes) -> str | None:
        """The region a sign-up chose; None when the body names none (the cell then answers
        the validation problem itself)."""
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        region = document.get("region") if isinstance(document, dict) else None
        if not isinstance(region, str):
            return None
        if region not in self.cells:
            raise Refused(
                VALIDATION_FAILED,
                "no cell serves this region",
                {"region": [self._one_of()]},
            )
        return region

    def cell_of_tenant(self, tenant_id: str) -> str:
        """The region holding a tenant, from the directory (inbound mail's routing)."""
        region = self.directory.region_of(tenant_id) if self.directory is not None else None
        if region is None:
            raise Refused(NOT_FOUND, "no such tenant")
        return region

    def record_signup(self, region: str, answer: bytes) -> None:
        try:
            tenant_id = json.loads(answer)["tenant"]["id"]
        except (ValueError, KeyError, TypeError):
            return
        if self.directory is None:
            return
        try:
            self.directory.record(tenant_id, region)
        except Exception:  # noqa: BLE001 - the tenant exists in its cell: the answer still goes
            log.exception("directory: tenant %s not recorded in region %s", tenant_id, region)

    def _one_of(self) -> str:
        return "must be one of: " + ", ".join(self.cells)


def make_handler(router: Router, timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ledgerdesk-router"

        def log_message(self, format: str, *args: Any) -> None:
            # http.server's line quotes the request line (path and query): not ours to log.
            pass

        def _any(self) -> None:
            # One request a connection: a body left unread (a refused or oversized one) can
            # never be taken for the next request.
            self.close_connection = True
            self.body_taken = False
            started = time.monotonic()
            region, status = "-", 0
            try:
                region, status = self._route()
            except Refused as refused:
                self._drain()
                status = self._problem(refused)
            except (ConnectionError, TimeoutError, OSError):
                # The client went away, or the cell did mid-answer: nothing more can be sent.
                self.close_connection = True
            log.info(
                "routed method=%s region=%s status=%s ms=%d",
                self.command,
                region,
                status,
                (time.monotonic() - started) * 1000,
            )

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any

        def _route(self) -> tuple[str, int]:
            path = urllib.parse.urlsplit(self.path).path
            body: bytes | None = None
            region = router.cell_of_key(self.headers.get("Authorization", ""))
            if region is None and path == SIGNUP and self.command == "POST":
                body = self._read_whole(SIGNUP_MAX_BYTES)
                region = router.cell_of_signup(body)
            if region is None:
                region = router.cell_of_header(self.headers.get(REGION_HEADER))
            region = region or router.default
            if body is not None:
                status, answer = self._forward_buffered(region, body)
                if status == 201:
                    router.record_signup(region, answer)
                return region, status
            return region, self._forward_streamed(region)

        def _drain(self) -> None:
            """Read what is left of a refused request's body (up to DRAIN_BYTES): a socket
            closed on unread data is reset, and the reset can reach the client before the
            problem it was sent."""
            if self.body_taken:
                return
            self.body_taken = True
            length = self._length()
            if length is not None and length <= DRAIN_BYTES:
                self.rfile.read(length)

        def _read_whole(self, limit: int) -> bytes:
            length = self._length()
            if length is None or length > limit:
                # Its region must be read before any cell is chosen: a body the router will not
                # hold is refused here (the connection then closes on the rest of it).
                raise Refused(
                    PAYLOAD_TOO_LARGE,
                    f"a sign-up is at most {limit} bytes, sent with its Content-Length",
                )
            self.body_taken = True
            return self.rfile.read(length)

        def _length(self) -> int | None:
            raw = self.headers.get("Content-Length")
            if raw is None:
                return None
            try:
                return max(0, int(raw))
            except ValueError:
                return None

        def _connect(self, region: str) -> http.client.HTTPConnection:
            parts = urllib.parse.urlsplit(router.cells[region])
            kind = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            return kind(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)

        def _send_request(self, region: str, body: Any, length: int | None) -> Any:
            upstream = self._connect(region)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            forwarded = self.headers.get("X-Forwarded-For")
            client = self.client_address[0]
            headers["X-Forwarded-For"] = f"{forwarded}, {client}" if forwarded else client
            headers.pop("Content-Length", None)
            chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
            if length is not None:
                headers["Content-Length"] = str(length)
            try:
                upstream.putrequest(
                    self.command, self.path, skip_host=True, skip_accept_encoding=True
                )
                for name, value in headers.items():
                    upstream.putheader(name, value)
                if chunked and length is None:
                    upstream.putheader("Transfer-Encoding", "chunked")
                upstream.endheaders()
                self.body_taken = True
                if isinstance(body, bytes):
                    upstream.send(body)
                elif length:
                    self._copy_request(upstream, length)
                elif chunked:
                    self._copy_chunked_request(upstream)
                return upstream, upstream.getresponse()
            except (ConnectionError, TimeoutError, OSError, http.client.HTTPException):
                upstream.close()
                raise Refused(SERVICE_UNAVAILABLE, f"the {region} cell did not answer") from None

        def _copy_request(self, upstream: http.client.HTTPConnection, length: int) -> None:
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(CHUNK, remaining))
                if not chunk:
                    raise ConnectionError("the client's body ended early")
                upstream.send(chunk)
                remaining -= len(chunk)

        def _copy_chunked_request(self, upstream: http.client.HTTPConnection) -> None:
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    upstream.send(b"0\r\n\r\n")
                    return
                data = self.rfile.read(size)
                self.rfile.readline()
                upstream.send(b"%x\r\n%s\r\n" % (len(data), data))

        def _forward_buffered(self, region: str, body: bytes) -> tuple[int, bytes]:
            upstream, response = self._send_request(region, body, len(body))
            try:
                answer = response.read()
            finally:
                upstream.close()
            self._start_answer(response, len(answer))
            if self.command != "HEAD":
                self.wfile.write(answer)
            return response.status, answer

        def _forward_streamed(self, region: str) -> int:
            length = self._length()
            upstream, response = self._send_request(region, None, length)
            try:
                declared = response.getheader("Content-Length")
                self._start_answer(response, int(declared) if declared is not None else None)
                if self.command == "HEAD" or response.status in (204, 304):
                    return response.status
                while True:
                    chunk = response.read1(CHUNK)
                    if not chunk:
                        break
                    if declared is None:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    else:
                        self.wfile.write(chunk)
                if declared is None:
                    self.wfile.write(b"0\r\n\r\n")
                return response.status
            finally:
                upstream.close()

        def _start_answer(self, response: http.client.HTTPResponse, length: int | None) -> None:
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() in HOP_BY_HOP or name.lower() == "content-length":
                    continue
                self.send_header(name, value)
            if length is not None:
                self.send_header("Content-Length", str(length))
            elif self.command != "HEAD" and response.status not in (204, 304):
                # A streamed body of unknown length (an export's archive): re-chunked as read.
                self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()

        def _problem(self, refused: Refused) -> int:
            request_id = str(uuid.uuid4())
            body: dict[str, Any] = {
                "type": refused.kind.type,
                "title": refused.kind.title,
                "status": refused.kind.status,
                "detail": refused.detail,
                "request_id": request_id,
                "trace_id": None,
            }
            if refused.errors is not None:
                body["errors"] = refused.errors
            data = json.dumps(body).encode()
            self.send_response_only(refused.kind.status)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header(REQUEST_ID, request_id)
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return refused.kind.status

    return Handler


class RouterServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    mail_front: Any = None


def serve(settings: Settings, timeout: float = 120.0) -> RouterServer:
    """The router's server on the gateway's host and port (not yet serving: ``serve_forever``),
    and its mail front where cells' mail listeners are configured (``gateway.mail_router``)."""
    directory_module.prepare(settings)
    directory = directory_module.Directory(settings)
    router = Router(settings.cells, directory)
    server = RouterServer(
        (settings.gateway_host, settings.gateway_port), make_handler(router, timeout)
    )
    server.mail_front = mail_router.start(settings, directory)
    return server


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env(service="router")
    server = serve(settings)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "routing on %s:%s to %s",
        settings.gateway_host,
        settings.gateway_port,
        ", ".join(settings.cells),
    )
    server.serve_forever(poll_interval=0.2)
    if server.mail_front is not None:
        server.mail_front.stop()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
