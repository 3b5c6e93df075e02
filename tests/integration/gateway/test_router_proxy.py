"""The router as an HTTP proxy (``gateway.router``), in front of a plain HTTP server standing in
for a cell's gateway: what HTTP itself must keep through a proxy (bodies either way, streamed or
chunked, statuses, end-to-end headers), and the router's own problem when a cell is down. The
routing itself, in front of real cells, is tests/e2e/test_residency.py's."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from gateway.router import REGION_HEADER, Router, RouterServer, make_handler
from kernel.crypto import apikeys
from kernel.testing import free_port

BIG = secrets.token_bytes(300_000)


class Cell(BaseHTTPRequestHandler):
    """Answers what it was sent, and a chunked body of unknown length at /chunked."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Request-Id", "rid-chunked")
            self.end_headers()
            for start in range(0, len(BIG), 70_000):
                piece = BIG[start : start + 70_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        self._echo(b"")

    def do_POST(self) -> None:  # noqa: N802
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while (size := int(self.rfile.readline().strip(), 16)) > 0:
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._echo(body)

    def _echo(self, body: bytes) -> None:
        answer = json.dumps(
            {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.hex(),
                "cell": self.server.server_address[1],
            }
        ).encode()
        self.send_response(207)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("ETag", '"7"')
        self.send_header("X-Request-Id", "rid-echo")
        self.end_headers()
        self.wfile.write(answer)


def _serving(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    return thread


@pytest.fixture
def cells() -> Iterator[dict[str, int]]:
    servers = {region: ThreadingHTTPServer(("127.0.0.1", 0), Cell) for region in ("uk", "in")}
    for server in servers.values():
        _serving(server)
    yield {region: server.server_address[1] for region, server in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


def _router(cells: dict[str, str]) -> Iterator[str]:
    port = free_port()
    server = RouterServer(("127.0.0.1", port), make_handler(Router(cells, None), timeout=10))
    _serving(server)
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def router(cells: dict[str, int]) -> Iterator[str]:
    yield from _router({r: f"http://127.0.0.1:{port}" for r, port in cells.items()})


def test_statuses_end_to_end_headers_and_bodies_pass_as_they_are(
    router: str, cells: dict[str, int]
) -> None:
    key = apikeys.generate("in")
    answer = requests.post(
        f"{router}/v1/contacts?email=a%40b.example",
        data=BIG,
        headers={
            "Authorization": f"Bearer {key}",
            "Idempotency-Key": "k1",
            "Connection": "keep-alive, X-Secret-Hop",
            "Keep-Alive": "timeout=5",
            "Expect": "100-continue",
        },
        timeout=10,
    )
    assert answer.status_code == 207
    assert answer.headers["ETag"] == '"7"' and answer.headers["X-Request-Id"] == "rid-echo"
    seen = answer.json()
    assert seen["cell"] == cells["in"], "a key naming its region goes to that region's cell"
    assert seen["path"] == "/v1/contacts?email=a%40b.example"
    assert bytes.fromhex(seen["body"]) == BIG
    assert seen["headers"]["authorization"] == f"Bearer {key}"
    assert seen["headers"]["idempotency-key"] == "k1"
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert "keep-alive" not in seen["headers"], "hop-by-hop headers end at the router"
    assert "expect" not in seen["headers"], "the router answered the 100 Continue itself"


def test_a_chunked_upload_and_a_chunked_answer_are_streamed_through(
    router: str, cells: dict[str, int]
) -> None:
    pieces = [BIG[i : i + 50_000] for i in range(0, len(BIG), 50_000)]
    sent = requests.post(f"{router}/upload", data=iter(pieces), timeout=10)
    assert bytes.fromhex(sent.json()["body"]) == BIG
    assert sent.json()["cell"] == cells["uk"], "what names no region goes to the default cell"

    streamed = requests.get(f"{router}/chunked", stream=True, timeout=10)
    assert streamed.status_code == 200 and streamed.headers["X-Request-Id"] == "rid-chunked"
    assert b"".join(streamed.iter_content(8192)) == BIG


def test_the_region_header_chooses_the_cell_of_what_names_none(
    router: str, cells: dict[str, int]
) -> None:
    seen = requests.get(f"{router}/v1/operator/health", headers={REGION_HEADER: "in"}, timeout=10)
    assert seen.json()["cell"] == cells["in"]
    refused = requests.get(f"{router}/healthz", headers={REGION_HEADER: "sg"}, timeout=10)
    assert refused.status_code == 422
    assert refused.json()["errors"] == {REGION_HEADER: ["must be one of: uk, in"]}


def test_a_cell_that_does_not_answer_is_a_503_problem() -> None:
    for url in _router({"uk": f"http://127.0.0.1:{free_port()}"}):
        answer = requests.get(f"{url}/v1/tenant", timeout=10)
        assert answer.status_code == 503
        assert answer.headers["Content-Type"] == "application/problem+json"
        problem = answer.json()
        assert problem["type"] == "/docs/problems#service-unavailable"
        assert problem["request_id"] == answer.headers["X-Request-Id"]


def test_a_sign_up_too_large_to_read_for_its_region_is_refused_by_the_router(router: str) -> None:
    answer = requests.post(f"{router}/v1/signup", data=b"{" + b" " * 70_000 + b"}", timeout=10)
    assert answer.status_code == 413
    assert answer.json()["type"] == "/docs/problems#payload-too-large"
    chunked = requests.post(f"{router}/v1/signup", data=iter([b"{}"]), timeout=10)
    assert chunked.status_code == 413
