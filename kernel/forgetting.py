"""Forgetting outlives a restore: a service applies retention's log again before it serves.

Retention keeps on record every kind of forgetting it ordered (erasures, destructions,
restrictions in force and the lifts that ended others, objections, purges with their cut-offs),
oldest first, each entry a privacy command as a service's handlers take it. A service applies
the whole log through its own privacy handlers while it starts (``EventStoreDependency.setup``,
before any entrypoint takes work), then whatever it forgets on its own clock (billing's legal
holds that ended). The handlers are idempotent, so a database restored from a backup taken
before some of it is brought back to what was forgotten, and one that was not changes nothing.

Until that is done the service does not serve: its RPC queue is not consumed (a request waits
there, and the gateway answers 503 when its timeout runs out) and its ``/readyz`` says
``forgetting: false``. While the log cannot be read (retention down or still starting) it waits
and tries again, saying so in its log, rather than serve what it may have to forget.
Retention reads its own log from its database: it cannot ask itself while it starts.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import eventlet
import greenlet

from kernel.config import Settings
from kernel.privacy import PRIVACY_COMMAND, Handler
from kernel.uow import EventSourcedStore

log = logging.getLogger(__name__)

# One entry of retention's log: {"at": ISO time it was ordered, "payload": the privacy command
# (the latest version's fields)}.
LogEntry = dict[str, Any]

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class Forgetting:
    """What a service forgets again as it starts, given its store once it is open and its
    settings (billing's answers name its legal hold)."""

    handlers: Callable[[EventSourcedStore, Settings], Mapping[str, Handler]]
    # Where the log comes from: retention, by RPC, unless given (retention reads its own).
    log: Callable[[EventSourcedStore], list[LogEntry]] | None = None
    # Forgetting on the service's own clock, done after the log (billing: ended legal holds;
    # the gateway: keys revoked since a restored backup), given the store and the settings.
    own: Callable[[EventSourcedStore, Settings], None] | None = None


class StartAbandoned(greenlet.GreenletExit):
    """The process was asked to stop while it waited to re-apply the log: it never served.

    A ``GreenletExit``: an ending asked for, which eventlet does not print as a crash from the
    green thread that ran the setup; whoever waits for that thread still gets it raised."""


# Set from a signal handler, which must not touch eventlet: a plain flag, polled.
_abandoned = [False]


def abandon_start() -> None:
    """Stop waiting: the process was told to stop before it served (``kernel.runner``)."""
    _abandoned[0] = True


def start_abandoned() -> bool:
    return _abandoned[0]


def from_retention(settings: Settings) -> Callable[[], list[LogEntry]]:
    """Reads the log from retention over RPC, by direct reply-to: a process's own broker user
    may declare neither the RPC exchange nor a reply queue."""
    from kernel.nameko_adapters.proxy import standalone_rpc

    def read() -> list[LogEntry]:
        with standalone_rpc(settings) as rpc:
            return list(rpc.retention.forgetting_log())

    return read


def commands(entries: list[LogEntry]) -> list[dict[str, Any]]:
    """Each entry as a handler takes a command: validated, with ``issued_at``."""
    return [
        {
            **PRIVACY_COMMAND.validate(entry["payload"]),
            "issued_at": dt.datetime.fromisoformat(entry["at"]),
        }
        for entry in entries
    ]


def reapply(
    service: str,
    read_log: Callable[[], list[LogEntry]],
    apply: Callable[[dict[str, Any]], bool],
    own: Callable[[], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Read the log and ``apply`` each command (True when the service has a handler for it),
    then ``own``; returns how many were applied. Tried again from the start, after a wait that
    doubles up to ``MAX_RETRY_SECONDS``, until all of it succeeds; raises ``StartAbandoned``
    when the process is told to stop meanwhile."""
    delay = FIRST_RETRY_SECONDS
    while True:
        step = "reading retention's log of forgetting"
        try:
            entries = read_log()
            applied = 0
            for command in commands(entries):
                step = f"re-applying {command['command']} of request {command['request_id']}"
                applied += bool(apply(command))
            if own is not None:
                step = "forgetting on its own clock"
                own()
        except Exception as exc:  # whatever failed, serving now would be worse: wait, retry
            # Ids and the error's type only: the error's text may quote personal data.
            log.warning(
                "%s does not serve yet: %s failed (%s); trying again in %.0f s",
                service,
                step,
                type(exc).__name__,
                delay,
            )
        else:
            log.info(
                "%s re-applied %d of %d entries of retention's log of forgetting",
                service,
                applied,
                len(entries),
            )
            return applied
        _wait(delay, stopping)
        delay = min(delay * 2, MAX_RETRY_SECONDS)


def _wait(seconds: float, stopping: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if stopping() or start_abandoned():
            raise StartAbandoned("told to stop before serving")
        left = deadline - time.monotonic()
        if left <= 0:
            return
        eventlet.sleep(min(left, 0.2))
