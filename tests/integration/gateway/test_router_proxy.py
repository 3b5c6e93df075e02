"""The router as an HTTP proxy (``gateway.router``), in front of a plain HTTP server standing in
for a cell's gateway: what HTTP itself must keep through a proxy (bodies either way, streamed or
chunked, statuses, end-to-end headers), and the router's own problem when a cell is down. The
routing itself, in front of real cells, is tests/e2e/test_residency.py's."""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from gateway.router import REGION_HEADER, Router, RouterServer, make_handler
from kernel.crypto import apikeys
from kernel.testing import free_port, wait_until

BIG = secrets.token_bytes(300_000)


class Cell(BaseHTTPRequestHandler):
    """Answers what it was sent, and a chunked body of unknown length at /chunked."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/slow":
            time.sleep(1.5)
        if self.path == "/hop":
            self.send_response(200)
            self.send_header("Connection", "X-Cell-Hop")
            self.send_header("X-Cell-Hop", "cell-secret")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/not-http":
            self.wfile.write(b"SMTP 220 hello\r\n\r\n")
            return
        if self.path == "/bad-length":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n0123456789")
            return
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
                "all_headers": [[k.lower(), v] for k, v in self.headers.items()],
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


def _router(cells: dict[str, str], **limits: float) -> Iterator[str]:
    """A router to ``cells``; ``client_timeout`` and ``max_connections`` when given."""
    port = free_port()
    handler_limits = {k: v for k, v in limits.items() if k == "client_timeout"}
    server_limits = {k: int(v) for k, v in limits.items() if k == "max_connections"}
    handler = make_handler(Router(cells, None), timeout=10, **handler_limits)
    server = RouterServer(("127.0.0.1", port), handler, **server_limits)
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


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _raw(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """``request`` as it is, byte for byte; the answer read to the connection's close."""
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while piece := conn.recv(65536):
            received += piece
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def _post(path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: router", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _bad_request(answer: tuple[int, dict[str, str], bytes]) -> None:
    status, headers, body = answer
    assert status == 400, body
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["type"] == "/docs/problems#bad-request"


def test_a_client_that_stalls_is_dropped_after_the_client_timeout(cells: dict[str, int]) -> None:
    for url in _router({"uk": f"http://127.0.0.1:{cells['uk']}"}, client_timeout=0.5):
        with socket.create_connection(("127.0.0.1", _port(url)), timeout=10) as conn:
            conn.sendall(b"GET /v1/tenant HTTP/1.1\r\nHost: router\r\n")  # headers never end
            assert conn.recv(1024) == b"", "the router closed the stalled connection"


def test_connections_past_the_limit_are_answered_503(cells: dict[str, int]) -> None:
    for url in _router({"uk": f"http://127.0.0.1:{cells['uk']}"}, max_connections=1):
        holder = socket.create_connection(("127.0.0.1", _port(url)), timeout=10)
        try:
            holder.sendall(b"GET /v1/tenant HTTP/1.1\r\n")  # holds the only slot
            time.sleep(0.2)
            busy = requests.get(f"{url}/v1/tenant", timeout=10)
            assert busy.status_code == 503
            assert busy.headers["Content-Type"] == "application/problem+json"
            assert busy.json()["request_id"] == busy.headers["X-Request-Id"]
        finally:
            holder.close()
        wait_until(
            lambda u=url: requests.get(f"{u}/v1/tenant", timeout=10).status_code == 207,
            timeout=10,
            what="the slot freed",
        )


def test_chunk_sizes_are_read_strictly(router: str, cells: dict[str, int]) -> None:
    chunked = "Transfer-Encoding: chunked"
    # An extension is ignored; the body reaches the cell whole.
    status, _, body = _raw(router, _post("/up", chunked, body=b"3;name=x\r\nabc\r\n0\r\n\r\n"))
    assert status == 207 and bytes.fromhex(json.loads(body)["body"]) == b"abc"
    for size in (b"-3", b"0x3", b"+3", b"3 3", b"", b"1" + b"0" * 20, b"7fffffff"):
        _bad_request(_raw(router, _post("/up", chunked, body=size + b"\r\nabc\r\n0\r\n\r\n")))
    _bad_request(_raw(router, _post("/up", chunked, body=b"3" * 100_000 + b"\r\n")))
    _bad_request(_raw(router, _post("/up", chunked, body=b"3\r\nabcXX\r\n0\r\n\r\n")))


def test_errors_are_answered_as_problems_and_logged_by_type_only(
    router: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    nested = b"[" * 60_000
    _bad_request(_raw(router, _post("/v1/signup", f"Content-Length: {len(nested)}", body=nested)))
    broken = requests.get(f"{router}/bad-length", timeout=10)
    assert broken.status_code == 502
    assert broken.json()["type"] == "/docs/problems#bad-gateway"
    assert requests.get(f"{router}/not-http", timeout=10).status_code == 502
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "127.0.0.1" not in out + err
    assert "[[[" not in caplog.text and "ten" not in caplog.text


def test_a_post_to_the_sign_up_path_however_written_is_a_sign_up(
    router: str, cells: dict[str, int]
) -> None:
    key = apikeys.generate("uk")
    for path in ("/v1/signup", "/v1/%73ignup", "/v1//signup/", "/v1/x/../signup?a=1"):
        answer = requests.post(
            f"{router}{path}",
            json={"region": "in"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert answer.json()["cell"] == cells["in"], f"{path}: the body's region, not the key's"


def test_headers_that_must_be_single_are_refused_repeated_and_others_pass_repeated(
    router: str,
) -> None:
    key = apikeys.generate("in")
    for repeated in (
        (f"Authorization: Bearer {key}", "Authorization: Bearer other"),
        ("Content-Length: 2", "Content-Length: 2"),
        ("Host: other",),
    ):
        _bad_request(_raw(router, _post("/v1/contacts", *repeated, body=b"{}")))
    status, _, body = _raw(
        router, _post("/v1/contacts", "X-Tag: a", "X-Tag: b", "Content-Length: 2", body=b"{}")
    )
    assert status == 207
    assert [v for k, v in json.loads(body)["all_headers"] if k == "x-tag"] == ["a", "b"]


def test_headers_named_by_connection_end_at_the_router_both_ways(router: str) -> None:
    sent = requests.get(
        f"{router}/v1/tenant",
        headers={"Connection": "close, X-Secret-Hop", "X-Secret-Hop": "client-secret"},
        timeout=10,
    )
    assert "x-secret-hop" not in sent.json()["headers"]
    answered = requests.get(f"{router}/hop", timeout=10)
    assert answered.status_code == 200 and "X-Cell-Hop" not in answered.headers


def test_content_length_with_transfer_encoding_is_refused(router: str) -> None:
    smuggled = b"3\r\nabc\r\n0\r\n\r\n"
    _bad_request(
        _raw(
            router,
            _post("/up", "Content-Length: 3", "Transfer-Encoding: chunked", body=smuggled),
        )
    )
    _bad_request(_raw(router, _post("/up", "Transfer-Encoding: gzip", body=b"abc")))
    _bad_request(_raw(router, _post("/up", "Content-Length: -3", body=b"abc")))


def test_a_stop_lets_requests_in_flight_finish_and_takes_no_more(cells: dict[str, int]) -> None:
    port = free_port()
    cells_urls = {"uk": f"http://127.0.0.1:{cells['uk']}"}
    server = RouterServer(("127.0.0.1", port), make_handler(Router(cells_urls, None), timeout=10))
    _serving(server)
    answers: list[int] = []
    slow = threading.Thread(
        target=lambda: answers.append(
            requests.get(f"http://127.0.0.1:{port}/slow", timeout=10).status_code
        )
    )
    slow.start()
    wait_until(lambda: server.active > 0, timeout=5, what="the slow request in flight")
    assert server.stop(grace=10) is True
    slow.join()
    assert answers == [207], "the request in flight was answered"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/v1/tenant", timeout=2)
    server.server_close()
