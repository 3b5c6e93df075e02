"""The whole-store sweep: every byte a world keeps, searched for planted values.

Every row of every table of every database of the world (bytea and JSON decoded, so nothing
hides in an encoding), every message of every queue of its vhost (read through the management
API and put back), and every file given (the processes' logs and exported spans).
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

import psycopg2
from psycopg2 import sql

from kernel.config import Settings
from kernel.testing import Infrastructure

# Where a text was found: ("db", database, table) / ("queue", name, "") / ("file", name, "").
Place = tuple[str, str, str]
_SEPARATORS = re.compile(r"[\s.\-]")


def _text(value: object) -> str:
    if isinstance(value, memoryview | bytes):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return "" if value is None else str(value)


def databases(settings: Settings) -> list[str]:
    conn = psycopg2.connect(settings.database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY datname",
                (settings.database_prefix + "\\_%",),
            )
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def database_texts(settings: Settings) -> Iterator[tuple[Place, str]]:
    """One text per row of every table of every database of the world."""
    for database in databases(settings):
        dsn = psycopg2.extensions.make_dsn(settings.database_url, dbname=database)
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                )
                for (table,) in cur.fetchall():
                    cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
                    for row in cur.fetchall():
                        yield ("db", database, table), "\x1f".join(_text(v) for v in row)
        finally:
            conn.close()


def queue_texts(
    infrastructure: Infrastructure, settings: Settings, every: int = 0
) -> Iterator[tuple[Place, str]]:
    """Every message of every queue of the world's vhost, its body and headers; each message is
    put back (the broker marks it redelivered, nothing more). The management API's counts are
    samples, seconds old: with ``every``, each queue is asked for up to that many messages
    whatever its count said."""
    vhost = urllib.parse.quote(settings.database_prefix, safe="")
    queues = infrastructure.management("GET", f"/api/queues/{vhost}").json()
    for queue in queues:
        count = max(int(queue.get("messages", 0)), every)
        if not count:
            continue
        name = urllib.parse.quote(queue["name"], safe="")
        messages = infrastructure.management(
            "POST",
            f"/api/queues/{vhost}/{name}/get",
            json={"count": count, "ackmode": "ack_requeue_true", "encoding": "auto"},
        ).json()
        for message in messages:
            body = message.get("payload", "")
            if message.get("payload_encoding") == "base64":
                body = base64.b64decode(body).decode("utf-8", "replace")
            yield (
                ("queue", queue["name"], ""),
                body + json.dumps(message.get("properties", {}), ensure_ascii=False),
            )


def file_texts(paths: Iterable[Path]) -> Iterator[tuple[Place, str]]:
    for path in paths:
        yield ("file", path.name, ""), path.read_text(errors="replace")


def find(canaries: Iterable[str], texts: Iterable[tuple[Place, str]]) -> dict[str, set[Place]]:
    """For each canary, the places holding it. A canary of digits alone (a card number) is
    also found written with any spaces, dots or dashes between its digits."""
    wanted = list(canaries)
    found: dict[str, set[Place]] = {c: set() for c in wanted}
    for place, text in texts:
        squeezed: str | None = None
        for canary in wanted:
            if canary in text:
                found[canary].add(place)
            elif canary.isdigit():
                if squeezed is None:
                    squeezed = _SEPARATORS.sub("", text)
                if canary in squeezed:
                    found[canary].add(place)
    return {c: places for c, places in found.items() if places}
