"""A development SMTP sink (aiosmtpd): it accepts every mail and keeps it, in memory and, given
a folder, as ``<n>.eml`` files there. ``make run`` starts one on ``LEDGERDESK_SMTP_HOST`` /
``_PORT`` when they are local and prints the folder; tests start their own on a free port and
script refusals per recipient (``refusals``: address -> the replies its next attempts get).

Nothing here is for production: it stores what it receives in plaintext.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class Sink:
    """The aiosmtpd handler: keeps every accepted message."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self.received: list[bytes] = []
        # address (lower case) -> the replies its next RCPT TO get, one per attempt ("451 ...").
        self.refusals: dict[str, deque[str]] = {}
        self.lock = threading.Lock()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook names)
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list
    ) -> str:
        with self.lock:
            queued = self.refusals.get(address.lower())
            if queued:
                return queued.popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        data = bytes(envelope.original_content or envelope.content)
        with self.lock:
            self.received.append(data)
            count = len(self.received)
        if self.folder is not None:
            (self.folder / f"{int(time.time())}-{count:05d}.eml").write_bytes(data)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        with self.lock:
            received = list(self.received)
        return [
            email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[misc]
            for data in received
        ]


@contextmanager
def running(host: str = "127.0.0.1", port: int = 0, folder: Path | None = None) -> Iterator[Any]:
    """A sink listening on ``host``:``port`` (0: a free one) while the block runs; yields the
    controller, whose ``handler`` is the ``Sink`` and ``port`` where it listens."""
    sink = Sink(folder)
    controller = Controller(sink, hostname=host, port=port or _free_port(host))
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A development SMTP sink: mail to .eml files.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    args = parser.parse_args(argv)
    with running(args.host, args.port, args.dir):
        print(f"SMTP sink on {args.host}:{args.port}; mail is written to {args.dir}/", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
