"""What every Ledgerdesk command line shares: its exit codes, its progress bars, and the one
place that turns an unreachable database or broker into the exit code that says so.

Exit codes (the same for every command, ``ledgerdesk`` and ``ledgerdesk-audit`` alike):

- ``0`` done: verified, listed, prepared.
- ``1`` failed on its merits: the ledger or an export is tampered or not covered, a dead letter
  cannot be replayed. Running it again will not change the answer.
- ``2`` usage: options that do not parse or do not go together, a file or setting that is
  missing or malformed (argparse's own code for the first).
- ``3`` unreachable: PostgreSQL, RabbitMQ or the gateway could not be reached. Nothing was
  decided; running it again once they are up may succeed. A monitor that sees ``3`` pages the
  operator about the infrastructure, one that sees ``1`` about the ledger.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum

import amqp.exceptions
import psycopg2
from tqdm import tqdm

from kernel.config import ConfigurationError
from kernel.db import DatabaseUnavailable


class Exit(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3


EXIT_CODES_HELP = (
    "exit status: 0 ok; 1 failed (tampered, not covered, not replayable); 2 usage or"
    " configuration; 3 unreachable (database, broker or gateway)"
)

# What "cannot reach it" looks like from each client: psycopg2 raises OperationalError from a
# pool as well as from connect, kombu and amqp raise OSError subclasses or their own.
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    psycopg2.OperationalError,
    amqp.exceptions.RecoverableConnectionError,
    ConnectionError,
    socket.timeout,
    socket.gaierror,
)


def guarded(main: Callable[[], int]) -> int:
    """Run ``main`` and map what it could not reach, or could not configure, to an exit code,
    with one line on stderr (the errors name hosts and ports, never a password)."""
    try:
        return main()
    except ConfigurationError as exc:
        print(f"configuration: {exc}", file=sys.stderr)
        return Exit.USAGE
    except amqp.exceptions.AccessRefused as exc:
        # A broker user with a process's permissions (services/broker_definitions.py) asked
        # for another's queue: say which, and that the operator's user is the one to use.
        print(f"refused by the broker: {exc.reply_text or exc}", file=sys.stderr)
        return Exit.FAILED
    except UNREACHABLE_ERRORS as exc:
        # psycopg2's own message names the host and port it tried, never the password.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"unreachable: {first}", file=sys.stderr)
        return Exit.UNREACHABLE


def shown() -> bool:
    """Progress bars go to stderr only when it is a terminal: pipes and logs stay clean."""
    return sys.stderr.isatty()


class Bar:
    """A progress bar on stderr (when a terminal) for a walk whose total is learnt when it
    starts: ``start(total)`` then ``reached(done)``, as ``services.audit.verification`` reports."""

    def __init__(self, unit: str, desc: str | None = None) -> None:
        self._bar = tqdm(unit=unit, desc=desc, disable=not shown(), file=sys.stderr)
        # Kept here too: a disabled tqdm counts nothing.
        self.total: int | None = None
        self.done = 0

    def start(self, total: int) -> None:
        self.total = total
        self._bar.reset(total=total)

    def reached(self, entries: int) -> None:
        self._bar.update(entries - self.done)
        self.done = entries

    def close(self) -> None:
        self._bar.close()


@contextmanager
def bar(unit: str, desc: str | None = None) -> Iterator[Bar]:
    progress = Bar(unit, desc)
    try:
        yield progress
    finally:
        progress.close()
