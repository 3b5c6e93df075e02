"""A real HTTP receiver for webhooks: a small ``http.server`` on a free loopback port that keeps
every request it got and answers as a test scripts it (statuses in turn, a delay, a redirect)."""

from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Script:
    """What the receiver answers: ``statuses`` in turn (then 200), after ``delay`` seconds;
    ``location`` goes with a 3xx."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    location: str | None = None


class Receiver:
    def __init__(self, server: http.server.ThreadingHTTPServer, script: Script, scheme: str):
        self._server = server
        self.script = script
        self.scheme = scheme
        self.received: list[Received] = []
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def _next_status(self) -> int:
        with self._lock:
            return self.script.statuses.pop(0) if self.script.statuses else 200

    def _record(self, request: Received) -> None:
        with self._lock:
            self.received.append(request)


@contextlib.contextmanager
def receiving(
    script: Script | None = None, tls: ssl.SSLContext | None = None
) -> Iterator[Receiver]:
    """A receiver listening on 127.0.0.1 (``tls``: https with that server context) until the
    block ends."""
    holder: dict[str, Receiver] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            receiver = holder["receiver"]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            receiver._record(
                Received("POST", self.path, dict(self.headers.items()), body, time.time())
            )
            if receiver.script.delay:
                time.sleep(receiver.script.delay)
            status = receiver._next_status()
            self.send_response(status)
            if 300 <= status < 400 and receiver.script.location:
                self.send_header("Location", receiver.script.location)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the test reads ``received``

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    receiver = Receiver(server, script or Script(), "https" if tls else "http")
    holder["receiver"] = receiver
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
