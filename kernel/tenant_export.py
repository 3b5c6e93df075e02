"""What a tenant's whole export asks of each service that holds part of it, and the rules every
answer follows.

The service that builds the export (retention) asks each owner, by RPC, for its kinds of rows:
``export_count(tenant_id, kind, as_of)`` first (for the progress shown), then
``export_page(tenant_id, kind, as_of, after, limit)`` until a page says there is no next one.
A page is a keyset page, so the cost of each is bounded whatever the tenant's size and no
position is skipped or repeated while rows are added; at most ``MAX_ROWS`` rows, however many
were asked for. ``as_of`` is when the export was asked for: rows created from then on are left
out, so the counts stay those of one moment and an export of a busy tenant ends.

A row is what the API shows of it (the same rendering), opened where it is stored encrypted;
what an erasure or a purge made unreadable reads as ``[erased]``.

A kind may be of files (a ticket's attachments): each of its rows names a file by ``id``, with
its ``path`` in the archive (``file_path``), its ``size``, ``chunks`` and ``sha256``, and the
builder asks ``export_file_chunk(tenant_id, kind, id, seq)`` for its bytes a chunk at a time
(base64, as RPC answers are JSON), so neither side holds a whole file. A file erased or purged
is in no page: its row goes with its key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from kernel.errors import NotFound

MAX_ROWS = 1000
# The position before every row: a time before any and the smallest id.
FIRST = ["-infinity", "00000000-0000-0000-0000-000000000000"]


def bounded(limit: int) -> int:
    return max(1, min(int(limit), MAX_ROWS))


def position(after: Sequence[Any] | None, width: int = 2) -> list[Any]:
    """The keyset position to read after: the one given, or ``FIRST`` (padded with -1 for a
    child's sequence number, for positions ``width`` long)."""
    if after:
        return list(after)
    return [*FIRST, *([-1] * (width - len(FIRST)))]


def page_of(
    rows: list[tuple], limit: int, render: Callable[[list[tuple]], list[dict[str, Any]]], at: Any
) -> dict[str, Any]:
    """A page from ``limit + 1`` rows read: the first ``limit`` rendered, and the position of
    the last (``at(row)``) when there are more."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": render(rows), "next": at(rows[-1]) if more and rows else None}


def unknown(service: str, kind: str) -> NotFound:
    return NotFound(f"{service} exports no {kind!r}")


def file_path(kind: str, file_id: str) -> str:
    """Where a file's bytes are in the archive: by kind and id (never a name a person gave)."""
    return f"{kind}/{uuid.UUID(str(file_id))}"
