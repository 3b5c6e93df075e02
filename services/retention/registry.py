"""The services retention knows: each announces itself and the categories of personal data it
holds, and a request filed is sent to, and waits for, every service announced by then."""

from __future__ import annotations

import json
import logging
from typing import Any

from kernel.envelope import Envelope
from kernel.uow import UnitOfWork

log = logging.getLogger(__name__)


def register_service(uow: UnitOfWork, event: Envelope) -> None:
    p = event.payload
    if p["service"] != event.source:
        # A service announces itself only (the source its broker user alone may publish under).
        log.error(
            "announcement %s names %s but came from %s: ignored",
            event.event_id,
            p["service"],
            event.source,
        )
        return
    uow.cur.execute(
        "INSERT INTO services (name, categories, commands, protocol_version, announced_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
        " categories = EXCLUDED.categories, commands = EXCLUDED.commands,"
        " protocol_version = EXCLUDED.protocol_version, announced_at = EXCLUDED.announced_at",
        (
            p["service"],
            json.dumps(p["categories"]),
            json.dumps(p["commands"]),
            p["protocol_version"],
            event.occurred_at,
        ),
    )


def registered_services(uow: UnitOfWork) -> list[dict[str, Any]]:
    uow.cur.execute("SELECT name, categories, commands FROM services ORDER BY name")
    return [{"name": n, "categories": c, "commands": m} for n, c, m in uow.cur.fetchall()]
