"""The router as its process (``python -m gateway.router``), with its directory in PostgreSQL, in
front of a plain HTTP server standing in for a cell's gateway and aiosmtpd's own server for
each cell's mail listener: its mail front takes one recipient a transaction whatever the
recipients' regions and keeps the listeners' per-peer limit; SIGTERM lets a request and a mail
session in flight finish, and takes no more; its log is JSON lines naming no path and no
address. Real cells behind it are tests/e2e/test_residency.py's."""

from __future__ import annotations

import json
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from gateway import directory
from kernel.config import Settings
from kernel.testing import Infrastructure, free_port, make_world, wait_until, world_env

BURST = 4
SECRET_PATH = "/v1/contacts/secret-path-x9"


class SlowCell(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/slow"):
            time.sleep(2)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@dataclass
class Running:
    settings: Settings
    url: str
    process: subprocess.Popen
    listeners: dict[str, subprocess.Popen]
    tenants: dict[str, str]


def _listener(port: int) -> subprocess.Popen:
    # aiosmtpd's Debugging handler prints each mail it takes.
    return subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


@pytest.fixture
def running(infrastructure: Infrastructure) -> Iterator[Running]:
    cell = ThreadingHTTPServer(("127.0.0.1", 0), SlowCell)
    threading.Thread(target=cell.serve_forever, daemon=True).start()
    ports = {region: free_port() for region in ("uk", "in")}
    listeners = {region: _listener(port) for region, port in ports.items()}
    try:
        with make_world(
            infrastructure,
            LEDGERDESK_GATEWAY_PORT=str(free_port()),
            LEDGERDESK_CELLS=f"uk=http://127.0.0.1:{cell.server_address[1]}",
            LEDGERDESK_CELLS_MAIL_IN=",".join(
                f"{r}=smtp://127.0.0.1:{p}" for r, p in ports.items()
            ),
            LEDGERDESK_MAIL_IN_PORT=str(free_port()),
            LEDGERDESK_MAIL_IN_PEER_BURST=str(BURST),
            LEDGERDESK_MAIL_IN_PEER_RATE="0.01",
        ) as settings:
            directory.prepare(settings)
            found = directory.Directory(settings)
            tenants = {name: str(uuid.uuid4()) for name in ("uk", "in", "in2")}
            try:
                for name, tenant in tenants.items():
                    found.record(tenant, name[:2])
            finally:
                found.close()
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.router"],
                env={**world_env(settings), "LEDGERDESK_LOG_FORMAT": "json"},
                stderr=subprocess.PIPE,
                text=True,
            )
            url = f"http://127.0.0.1:{settings.gateway_port}"
            try:
                wait_until(lambda: _up(url), timeout=30, what="the router")
                yield Running(settings, url, process, listeners, tenants)
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=30)
    finally:
        for listener in listeners.values():
            listener.kill()
            listener.wait(timeout=10)
        cell.shutdown()
        cell.server_close()


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_mail_takes_one_recipient_a_transaction_and_a_peer_is_limited(running: Running) -> None:
    domain = running.settings.mail_in_domain
    tenants = running.tenants
    with smtplib.SMTP("127.0.0.1", running.settings.mail_in_port, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.mail("dev@example.com")[0] == 250
        assert smtp.rcpt(f"{tenants['in']}@{domain}")[0] == 250
        # Same region, another region, no such tenant: one answer, which tells nothing of them.
        answers = {smtp.rcpt(f"{tenants[name]}@{domain}") for name in ("in2", "uk")}
        answers.add(smtp.rcpt(f"{uuid.uuid4()}@{domain}"))
        assert answers == {(452, b"4.5.3 One recipient per message: send the rest again")}
        assert smtp.data(b"Subject: x\r\n\r\nIt broke.\r\n")[0] == 250
        # The burst less the mail above, then 451 (the rate refills one in a hundred seconds).
        codes = []
        for _ in range(BURST):
            codes.append(smtp.mail("dev@example.com")[0])
            smtp.rset()
        assert codes == [250] * (BURST - 1) + [451]
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(timeout=30) == 0
    for listener in running.listeners.values():
        listener.terminate()
    received = {r: p.communicate(timeout=10)[0] for r, p in running.listeners.items()}
    assert "It broke." in received["in"] and "It broke." not in received["uk"]


def test_a_move_begun_between_rcpt_and_data_is_answered_451_at_data(running: Running) -> None:
    """A mail whose tenant began moving after its RCPT is not handed to the cell it leaves (it
    would be lost with that cell's copy): the relay is told to try again, and reaches the
    tenant's new cell once the move is cut over."""
    tenant = running.tenants["in2"]
    found = directory.Directory(running.settings)
    try:
        with smtplib.SMTP("127.0.0.1", running.settings.mail_in_port, timeout=30) as smtp:
            smtp.ehlo()
            assert smtp.mail("dev@example.com")[0] == 250
            assert smtp.rcpt(f"{tenant}@{running.settings.mail_in_domain}")[0] == 250
            assert found.begin_move(tenant, "in", "uk")
            assert smtp.data(b"Subject: x\r\n\r\nSent while moving.\r\n")[0] == 451
    finally:
        found.close()


def test_sigterm_lets_a_mail_session_in_progress_finish_and_takes_no_more(
    running: Running,
) -> None:
    port = running.settings.mail_in_port
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.mail("dev@example.com")[0] == 250
        assert smtp.rcpt(f"{running.tenants['in']}@{running.settings.mail_in_domain}")[0] == 250
        running.process.send_signal(signal.SIGTERM)
        wait_until(lambda: not _accepts(port), timeout=30, what="the mail front to stop accepting")
        # The session begun before the signal is let finish: its mail reaches the cell.
        assert smtp.data(b"Subject: x\r\n\r\nSent while stopping.\r\n")[0] == 250
        assert smtp.mail("dev@example.com")[0] == 421
        assert running.process.poll() is None  # still waiting for this session to end
    assert running.process.wait(timeout=30) == 0
    for listener in running.listeners.values():
        listener.terminate()
    received = {r: p.communicate(timeout=10)[0] for r, p in running.listeners.items()}
    assert "Sent while stopping." in received["in"]


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        return False
    return True


def test_sigterm_lets_a_request_in_flight_finish_and_the_log_names_no_path(
    running: Running,
) -> None:
    answers: list[requests.Response] = []
    slow = threading.Thread(
        target=lambda: answers.append(requests.get(f"{running.url}/slow{SECRET_PATH}", timeout=30))
    )
    slow.start()
    time.sleep(0.5)  # the request reaches the cell, which takes 2 s to answer
    running.process.send_signal(signal.SIGTERM)
    slow.join()
    assert answers[0].status_code == 200 and answers[0].content == b"ok"
    assert running.process.wait(timeout=30) == 0
    log = running.process.stderr.read() if running.process.stderr else ""
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert any(line["message"].startswith("routed method=GET") for line in lines), log
    assert all(line["service"] == "router" for line in lines)
    assert "secret-path" not in log and "127.0.0.1" not in log.replace(
        f"127.0.0.1:{running.settings.gateway_port}", ""
    )
