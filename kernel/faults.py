"""Named fault points for the reliability tests: a crash exactly where a test needs one.

``LEDGERDESK_FAULTS=relay.after_publish`` makes the process kill itself with SIGKILL when it
reaches that point (``name:N`` on the N-th time). Unset, a fault point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def _armed() -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, os.environ.get("LEDGERDESK_FAULTS", "").split(",")):
        name, _, nth = item.partition(":")
        armed[name.strip()] = int(nth or 1)
    return armed


_ARMED = _armed()


def point(name: str) -> None:
    nth = _ARMED.get(name)
    if nth is None:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= nth:
        os.kill(os.getpid(), signal.SIGKILL)
