"""The router in front of the region cells: a plain HTTP reverse proxy.

Each region is a cell, a whole platform (every service and its gateway) with databases and a
RabbitMQ vhost of its own. The router sends each request to one cell's gateway:

- a request whose API key is a moved tenant's (``services.tenant_move``; its keyed hash in the
  directory's ``moved_keys``, held in memory and read again on every change) to the tenant's
  current cell, or refused 503 with Retry-After while its move is in its refusal window;
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
ids and routing only: never a path, a query, a body, a key or an address; an error is logged
by its type.

Clients get ``CLIENT_TIMEOUT`` seconds between reads and writes, at most ``MAX_CONNECTIONS``
connections are served at once (the next is answered 503 and closed), and a request that
breaks HTTP in a way a cell might read differently from the router (a repeated Content-Length,
Host or Authorization; Content-Length with Transfer-Encoding; a malformed chunk) is refused
400. SIGTERM stops accepting, on HTTP and mail alike, lets requests and mail sessions in flight
finish (at most ``STOP_GRACE`` seconds) and exits.

On start and every ``LEDGERDESK_DIRECTORY_SYNC_MINUTES`` the directory is reconciled with the
tenants the cells hold (``gateway.directory_sync``): tenants it missed recorded, destroyed ones
removed.

    python -m gateway.router      # on LEDGERDESK_GATEWAY_HOST:PORT, to LEDGERDESK_CELLS
"""

from __future__ import annotations

import warnings

# Known and accepted, as the runner says (kernel.runner): the kernel's modules load nameko, on
# eventlet. Filtered before they are imported, or the warning is the log's first line, not JSON.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import http.client  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import posixpath  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import uuid  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from typing import Any  # noqa: E402

from gateway import directory as directory_module  # noqa: E402
from gateway import directory_sync, mail_router  # noqa: E402
from gateway.problems import (  # noqa: E402
    BAD_GATEWAY,
    BAD_REQUEST,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    REQUEST_ID,
    SERVICE_UNAVAILABLE,
    UNAUTHORIZED,
    VALIDATION_FAILED,
    Kind,
)
from kernel.config import ConfigurationError, Settings  # noqa: E402
from kernel.crypto import apikeys  # noqa: E402
from kernel.logs import configure_logging  # noqa: E402

log = logging.getLogger("gateway.router")

REGION_HEADER = "X-Ledgerdesk-Region"
SIGNUP = "/v1/signup"
# A sign-up's body is read whole (its region chooses the cell): the gateway's own limit for it
# is far below this.
SIGNUP_MAX_BYTES = 64 * 1024
CHUNK = 64 * 1024
# A refused request's body is read and dropped up to this size before the problem is sent.
DRAIN_BYTES = 1024 * 1024
# Seconds a client may leave its connection idle mid-request (or not read its answer): a
# client that sends a header a minute holds no thread for long.
CLIENT_TIMEOUT = 30.0
# Connections served at once, each a thread; more are answered 503 at once and closed.
MAX_CONNECTIONS = 256
# Seconds a client refused during a tenant's move is told to wait (Retry-After): the window
# lasts as long as the copy and its verification, seconds to minutes.
MOVE_RETRY_AFTER = 5
# Seconds between two reads of the directory's moved keys (a NOTIFY reads them at once).
MOVES_REFRESH = 1.0
# Seconds a SIGTERM leaves the requests in flight to finish before the process exits.
STOP_GRACE = 20.0
# A chunk-size line, a trailer line (RFC 9112, 7.1): longer is no client's honest mistake.
MAX_LINE = 8 * 1024
MAX_TRAILERS = 64
# A chunk may be at most this large (it is copied in CHUNK pieces whatever its size): the cap
# keeps a size of a hundred hex digits from being taken at its word.
MAX_CHUNK_SIZE = 1 << 30
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
DIGITS = re.compile(r"[0-9]{1,18}")
# Headers a cell must see once: a second Content-Length or Host may be read by the cell other
# than the router read it, and a second Authorization might be the one the cell checks while
# the router routed by the first.
SINGLE = ("Authorization", "Content-Length", "Host")
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

    def __init__(
        self,
        kind: Kind,
        detail: str,
        errors: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.errors = kind, detail, errors
        self.retry_after = retry_after


class CellFault(Exception):
    """The cell's answer could not be read (502): raised from what broke, kept as its cause."""


def hop_by_hop(headers: Any) -> frozenset[str]:
    """The fixed hop-by-hop headers and those a message's Connection header names (RFC 9110,
    7.6.1): a client's ``Connection: X-Secret`` makes X-Secret end at the router."""
    named = {
        token.strip().lower()
        for value in headers.get_all("Connection") or ()
        for token in value.split(",")
    }
    return HOP_BY_HOP | frozenset(named - {""})


def normalised_path(target: str) -> str:
    """A request target's path as the cell will route it: percent-decoded, dot segments and
    repeated slashes gone, no trailing slash. Only the router's decision reads it: the cell is
    sent the target as it came."""
    if target.startswith("/"):
        path = target.split("?", 1)[0].split("#", 1)[0]
    else:  # absolute form (RFC 9112, 3.2.2)
        path = urllib.parse.urlsplit(target).path
    path = posixpath.normpath("/" + urllib.parse.unquote(path, errors="replace"))
    return "/" + path.strip("/")


class Router:
    """Which cell takes a request; the directory of tenants' regions."""

    def __init__(
        self,
        cells: dict[str, str],
        directory: directory_module.Directory | None,
        api_key_secret: str = "",
    ):
        if not cells:
            raise ConfigurationError("LEDGERDESK_CELLS names no cell: the router has nowhere to go")
        self.cells = dict(cells)
        self.default = next(iter(self.cells))
        self.directory = directory
        self.api_key_secret = api_key_secret
        # Moved tenants' keys (keyed hash -> region, None while refused), replaced whole by
        # ``refresh_moves``: a reader sees one map or the next, never half of one.
        self.moved: dict[str, str | None] = {}

    def refresh_moves(self) -> None:
        """The directory's moved keys, read again (one read of an empty table when no tenant
        was ever moved)."""
        if self.directory is not None:
            self.moved = self.directory.key_routes()

    def cell_of_key(self, authorization: str) -> str | None:
        """The region a bearer key names, or its moved tenant's region; None when it names
        none. A key of a tenant inside a move's refusal window is refused (503)."""
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        moved = self.moved
        if moved and self.api_key_secret:
            key_hash = apikeys.keyed_hash(self.api_key_secret, credential.strip())
            if key_hash in moved:
                target = moved[key_hash]
                if target is None:
                    raise Refused(
                        SERVICE_UNAVAILABLE,
                        "the tenant is moving to another region: try again shortly",
                        retry_after=MOVE_RETRY_AFTER,
                    )
                if target in self.cells:
                    return target
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
        except RecursionError:
            # Nested deeper than the parser goes: no sign-up the cell would take either.
            raise Refused(BAD_REQUEST, "the sign-up is nested too deeply to read") from None
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
        except (ValueError, KeyError, TypeError, RecursionError):
            return
        if self.directory is None:
            return
        try:
            self.directory.record(tenant_id, region)
        except Exception as exc:  # noqa: BLE001 - the tenant exists in its cell: the answer goes
            log.error(
                "directory: tenant %s not recorded in region %s (%s)",
                tenant_id,
                region,
                type(exc).__name__,
            )

    def _one_of(self) -> str:
        return "must be one of: " + ", ".join(self.cells)


def make_handler(
    router: Router, timeout: float, client_timeout: float = CLIENT_TIMEOUT
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ledgerdesk-router"
        # socketserver sets it on the client's socket: every read and write waits at most this.
        timeout = client_timeout

        def log_message(self, format: str, *args: Any) -> None:
            # http.server's line quotes the request line (path and query): not ours to log.
            pass

        def _any(self) -> None:
            # One request a connection: a body left unread (a refused or oversized one) can
            # never be taken for the next request.
            self.close_connection = True
            self.body_taken = False
            self.answer_started = False
            # Whose fault an unexpected error is: the client's until the cell is answering.
            self.blame = BAD_REQUEST
            started = time.monotonic()
            region, status = "-", 0
            try:
                region, status = self._route()
            except Refused as refused:
                status = self._refuse(refused)
            except (ConnectionError, TimeoutError):
                # The client went away or stalled, or the cell did mid-answer: nothing more
                # can be sent.
                pass
            except Exception as exc:  # noqa: BLE001 - any error is answered and logged by type
                kind = BAD_GATEWAY if isinstance(exc, CellFault) else self.blame
                error = exc.__cause__ if isinstance(exc, CellFault) and exc.__cause__ else exc
                log.warning("router: %s answered %s", type(error).__name__, kind.status)
                status = self._refuse(Refused(kind, kind.title))
            log.info(
                "routed method=%s region=%s status=%s ms=%d",
                self.command,
                region,
                status,
                (time.monotonic() - started) * 1000,
            )

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any

        def _route(self) -> tuple[str, int]:
            self._check_framing()
            body: bytes | None = None
            region: str | None = None
            if self.command == "POST" and normalised_path(self.path) == SIGNUP:
                # A sign-up whatever it carries: its region is its body's, and the directory
                # must learn the tenant it makes.
                body = self._read_whole(SIGNUP_MAX_BYTES)
                region = router.cell_of_signup(body)
            if region is None:
                region = router.cell_of_key(self.headers.get("Authorization", ""))
            if region is None:
                region = router.cell_of_header(self.headers.get(REGION_HEADER))
            region = region or router.default
            if body is not None:
                status, answer = self._forward_buffered(region, body)
                if status == 201:
                    router.record_signup(region, answer)
                return region, status
            return region, self._forward_streamed(region)

        def _check_framing(self) -> None:
            """Refuse what a cell could frame or read otherwise than the router does."""
            for name in SINGLE:
                if len(self.headers.get_all(name) or ()) > 1:
                    raise Refused(BAD_REQUEST, f"{name} may be sent once")
            encoding = self.headers.get_all("Transfer-Encoding")
            if encoding is not None:
                if self.headers.get("Content-Length") is not None:
                    raise Refused(
                        BAD_REQUEST, "Content-Length and Transfer-Encoding may not both be sent"
                    )
                if [e.strip().lower() for e in encoding] != ["chunked"]:
                    raise Refused(BAD_REQUEST, "the only transfer coding taken is chunked")
            length = self.headers.get("Content-Length")
            if length is not None and not DIGITS.fullmatch(length.strip()):
                raise Refused(BAD_REQUEST, "Content-Length must be a number of bytes")

        def _refuse(self, refused: Refused) -> int:
            if self.answer_started:
                return 0  # part of an answer is out: the connection is closed on it
            try:
                self._drain()
            except Exception:  # noqa: BLE001 - a body that cannot be drained: answer anyway
                pass
            try:
                return self._problem(refused)
            except OSError:
                return 0

        def _drain(self) -> None:
            """Read what is left of a refused request's body (up to DRAIN_BYTES): a socket
            closed on unread data is reset, and the reset can reach the client before the
            problem it was sent."""
            if self.body_taken:
                return
            self.body_taken = True
            length = self._length()
            if length is not None and length <= DRAIN_BYTES:
                remaining = length
                while remaining > 0:
                    piece = self.rfile.read(min(CHUNK, remaining))
                    if not piece:
                        return
                    remaining -= len(piece)

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
            body = self.rfile.read(length)
            if len(body) < length:
                raise ConnectionError("the client's body ended early")
            return body

        def _length(self) -> int | None:
            raw = self.headers.get("Content-Length")
            if raw is None or not DIGITS.fullmatch(raw.strip()):
                return None
            return int(raw)

        def _connect(self, region: str) -> http.client.HTTPConnection:
            parts = urllib.parse.urlsplit(router.cells[region])
            kind = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            return kind(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)

        def _send_request(self, region: str, body: bytes | None, length: int | None) -> Any:
            upstream = self._connect(region)
            dropped = hop_by_hop(self.headers) | {"content-length", "x-forwarded-for"}
            # Every header as it came, repeated ones repeated: a dict would keep one of them.
            headers = [(k, v) for k, v in self.headers.items() if k.lower() not in dropped]
            forwarded = ", ".join(self.headers.get_all("X-Forwarded-For") or ())
            client = self.client_address[0]
            headers.append(("X-Forwarded-For", f"{forwarded}, {client}" if forwarded else client))
            chunked = self.headers.get("Transfer-Encoding") is not None
            if length is not None:
                headers.append(("Content-Length", str(length)))
            try:
                upstream.putrequest(
                    self.command, self.path, skip_host=True, skip_accept_encoding=True
                )
                for name, value in headers:
                    upstream.putheader(name, value)
                if chunked and length is None:
                    upstream.putheader("Transfer-Encoding", "chunked")
                upstream.endheaders()
            except (OSError, http.client.HTTPException):
                upstream.close()
                raise Refused(SERVICE_UNAVAILABLE, f"the {region} cell did not answer") from None
            try:
                self.body_taken = True
                if body is not None:
                    self._to_cell(upstream, body)
                elif length:
                    self._copy_request(upstream, length)
                elif chunked:
                    self._copy_chunked_request(upstream)
                try:
                    response = upstream.getresponse()
                except OSError:
                    raise Refused(
                        SERVICE_UNAVAILABLE, f"the {region} cell did not answer"
                    ) from None
                except http.client.HTTPException as exc:
                    # It answered, but not in HTTP the router can read.
                    raise CellFault("the cell's answer could not be read") from exc
                self.blame = BAD_GATEWAY
                return upstream, response
            except BaseException:
                upstream.close()
                raise

        def _to_cell(self, upstream: http.client.HTTPConnection, data: bytes) -> None:
            try:
                upstream.send(data)
            except OSError as exc:
                raise Refused(SERVICE_UNAVAILABLE, "the cell did not take the request") from exc

        def _copy_request(self, upstream: http.client.HTTPConnection, length: int) -> None:
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(CHUNK, remaining))
                if not chunk:
                    raise ConnectionError("the client's body ended early")
                self._to_cell(upstream, chunk)
                remaining -= len(chunk)

        def _copy_chunked_request(self, upstream: http.client.HTTPConnection) -> None:
            """The client's chunks to the cell, re-chunked in CHUNK pieces: a chunk's size is
            hex digits only (a chunk extension is dropped), at most MAX_CHUNK_SIZE."""
            while True:
                size = self._chunk_size(_line(self.rfile))
                if size == 0:
                    for _ in range(MAX_TRAILERS):
                        # Trailers are dropped: the cell was sent none declared.
                        if _line(self.rfile) in (b"\r\n", b"\n"):
                            break
                    else:
                        raise Refused(BAD_REQUEST, "too many trailer lines")
                    self._to_cell(upstream, b"0\r\n\r\n")
                    return
                remaining = size
                while remaining > 0:
                    data = self.rfile.read(min(CHUNK, remaining))
                    if not data:
                        raise ConnectionError("the client's body ended early")
                    self._to_cell(upstream, b"%x\r\n%s\r\n" % (len(data), data))
                    remaining -= len(data)
                if _line(self.rfile) not in (b"\r\n", b"\n"):
                    raise Refused(BAD_REQUEST, "a chunk is not followed by its line end")

        @staticmethod
        def _chunk_size(line: bytes) -> int:
            digits = line.split(b";", 1)[0].strip(b" \t\r\n")
            if not CHUNK_SIZE.fullmatch(digits):
                raise Refused(BAD_REQUEST, "a chunk size is hex digits")
            size = int(digits, 16)
            if size > MAX_CHUNK_SIZE:
                raise Refused(BAD_REQUEST, f"a chunk is at most {MAX_CHUNK_SIZE} bytes")
            return size

        def _forward_buffered(self, region: str, body: bytes) -> tuple[int, bytes]:
            upstream, response = self._send_request(region, body, len(body))
            try:
                answer = _from_cell(lambda: response.read())
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
                if declared is not None and not DIGITS.fullmatch(declared.strip()):
                    raise CellFault("the cell's Content-Length is not a number")
                self._start_answer(response, int(declared) if declared is not None else None)
                if self.command == "HEAD" or response.status in (204, 304):
                    return response.status
                while True:
                    chunk = _from_cell(lambda: response.read1(CHUNK))
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
            dropped = hop_by_hop(response.msg) | {"content-length"}
            self.answer_started = True
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in dropped:
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
            self.answer_started = True
            self.send_response_only(refused.kind.status)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header(REQUEST_ID, request_id)
            if refused.retry_after is not None:
                self.send_header("Retry-After", str(refused.retry_after))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return refused.kind.status

    return Handler


def _line(stream: io.BufferedIOBase) -> bytes:
    """One line of a chunked body, at most MAX_LINE bytes."""
    line = stream.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise Refused(BAD_REQUEST, "a chunk's line is too long")
    if not line:
        raise ConnectionError("the client's body ended early")
    return line


def _from_cell(read: Any) -> bytes:
    """A read of the cell's answer; what breaks in it is the cell's fault (502)."""
    try:
        return read()
    except (ConnectionError, TimeoutError):
        raise
    except (http.client.HTTPException, ValueError) as exc:
        raise CellFault("the cell's answer could not be read") from exc


def _busy_answer() -> bytes:
    request_id = str(uuid.uuid4())
    body = json.dumps(
        {
            "type": SERVICE_UNAVAILABLE.type,
            "title": SERVICE_UNAVAILABLE.title,
            "status": SERVICE_UNAVAILABLE.status,
            "detail": "the router is serving as many connections as it takes",
            "request_id": request_id,
            "trace_id": None,
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{REQUEST_ID}: {request_id}\r\n"
        "Retry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class RouterServer(ThreadingHTTPServer):
    """A thread a connection, at most ``max_connections`` of them; ``stop`` waits for those
    in flight."""

    daemon_threads = True
    allow_reuse_address = True
    mail_front: Any = None
    directory_sync: directory_sync.Periodic | None = None

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.slots = threading.BoundedSemaphore(max_connections)
        self.active = 0
        self.idle = threading.Condition()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self._turn_away(request)
            return
        with self.idle:
            self.active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done()

    def _done(self) -> None:
        with self.idle:
            self.active -= 1
            self.idle.notify_all()
        self.slots.release()

    def _turn_away(self, request: socket.socket) -> None:
        """503 to a connection past the limit, on the accepting thread: nothing of it is
        waited for (what it already sent is read without blocking, so the close is no reset
        that could overtake the answer)."""
        try:
            request.setblocking(False)
            try:
                for _ in range(16):
                    if not request.recv(CHUNK):
                        break
            except (BlockingIOError, InterruptedError):
                pass
            request.send(_busy_answer())
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's prints the client's address and a traceback, whose frames may quote
        # what the client sent: the error's type says enough.
        error = sys.exc_info()[0]
        log.warning("router: connection ended by %s", error.__name__ if error else "error")

    def stop(self, grace: float = STOP_GRACE) -> bool:
        """Stop accepting, then wait up to ``grace`` seconds for connections in flight; False
        when some were still open. Called from any thread but the one serving."""
        self.shutdown()
        self.socket.close()
        deadline = time.monotonic() + grace
        with self.idle:
            while self.active > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.idle.wait(left)
        return True


def serve(settings: Settings, timeout: float = 120.0) -> RouterServer:
    """The router's server on the gateway's host and port (not yet serving: ``serve_forever``),
    and its mail front where cells' mail listeners are configured (``gateway.mail_router``)."""
    directory_module.prepare(settings)
    directory = directory_module.Directory(settings)
    router = Router(settings.cells, directory, settings.api_key_secret)
    router.refresh_moves()
    server = RouterServer(
        (settings.gateway_host, settings.gateway_port), make_handler(router, timeout)
    )
    server.mail_front = mail_router.start(settings, directory)
    server.directory_sync = directory_sync.Periodic(
        settings, directory, settings.directory_sync_minutes * 60
    ).start()
    threading.Thread(
        target=_follow_moves, args=(router, settings), name="moves", daemon=True
    ).start()
    return server


def _follow_moves(router: Router, settings: Settings) -> None:
    """Keep the router's moved keys current: read again on every NOTIFY from the directory
    (a move's step or its keys changed) and at least every ``MOVES_REFRESH`` seconds, so a
    notification lost with a dropped connection costs a second at most."""
    import select

    import psycopg2

    while True:
        conn = None
        try:
            conn = psycopg2.connect(settings.database_dsn(directory_module.NAME))
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("LISTEN tenant_moves")
            while True:
                router.refresh_moves()
                if select.select([conn], [], [], MOVES_REFRESH) != ([], [], []):
                    conn.poll()
                    conn.notifies.clear()
        except Exception as exc:  # noqa: BLE001 - the directory went away: try again shortly
            log.warning("router: moved keys not refreshed (%s)", type(exc).__name__)
            time.sleep(MOVES_REFRESH)
        finally:
            if conn is not None:
                conn.close()


def main() -> int:
    settings = Settings.from_env(service="router")
    configure_logging("router", settings.log_format, settings.log_level)
    server = serve(settings)
    stopping = threading.Lock()
    stopped = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        # Once: a second signal while the requests in flight finish changes nothing.
        if stopping.acquire(blocking=False):
            threading.Thread(target=finish, daemon=True).start()

    def finish() -> None:
        try:
            if server.directory_sync is not None:
                server.directory_sync.stop()
            # Mail and HTTP drain side by side, in the one grace.
            mail = threading.Thread(target=stop_mail, daemon=True)
            mail.start()
            if not server.stop(STOP_GRACE):
                log.warning("router: stopped with requests still in flight")
            mail.join()
        finally:
            stopped.set()

    def stop_mail() -> None:
        if server.mail_front is not None and not mail_router.stop(server.mail_front, STOP_GRACE):
            log.warning("router: stopped with mail sessions still in flight")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "routing on %s:%s to %s",
        settings.gateway_host,
        settings.gateway_port,
        ", ".join(settings.cells),
    )
    server.serve_forever(poll_interval=0.2)
    stopped.wait()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
