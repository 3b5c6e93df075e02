"""A tenant's export as a ZIP archive written in one pass, without holding it: rows go in as
JSON lines, compressed as they come, and the archive's bytes leave in fixed-size chunks as
they fill (``ChunkSink``), so memory stays flat however large the tenant.

ZIP (deflate, ZIP64 entries, sizes in data descriptors because nothing is seeked back to) is
read by every platform's own tools and by Python's ``zipfile``; each member's CRC-32 guards it
on extraction, and the manifest gives each JSON Lines file's row count and SHA-256, and each
attached file's size and SHA-256 (``file``: streamed in as its chunks come).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

CHUNK_BYTES = 1 << 20
FORMAT = "ledgerdesk-tenant-export-v1"
_SORTED = orjson.OPT_SORT_KEYS


class ChunkSink:
    """A write-only stream that hands its bytes on in chunks of ``chunk_bytes`` (the last one
    shorter), numbered from 0, as they fill; and counts and hashes the whole."""

    def __init__(self, store: Callable[[int, bytes], None], chunk_bytes: int = CHUNK_BYTES):
        self._store = store
        self._chunk_bytes = chunk_bytes
        self._buffer = bytearray()
        self._sha256 = hashlib.sha256()
        self.chunks = 0
        self.size = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        self._sha256.update(data)
        self.size += len(data)
        while len(self._buffer) >= self._chunk_bytes:
            self._emit(bytes(self._buffer[: self._chunk_bytes]))
            del self._buffer[: self._chunk_bytes]
        return len(data)

    def flush(self) -> None:
        """Nothing: a chunk leaves when it is full, the last one at ``finish``."""

    def close(self) -> None:
        """Nothing: ``finish`` sends the last chunk (``zipfile`` never closes a stream it was
        given)."""

    def finish(self) -> None:
        if self._buffer:
            self._emit(bytes(self._buffer))
            self._buffer.clear()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def _emit(self, chunk: bytes) -> None:
        self._store(self.chunks, chunk)
        self.chunks += 1


@dataclass
class FileEntry:
    """One JSON Lines file of the archive: what the manifest says of it."""

    name: str
    service: str
    kind: str
    rows: int = 0
    bytes: int = 0
    _sha256: Any = field(default_factory=hashlib.sha256, repr=False)

    def manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "service": self.service,
            "kind": self.kind,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self._sha256.hexdigest(),
        }


class ArchiveWriter:
    """The archive's members, written in order into a ``ChunkSink``."""

    def __init__(self, sink: ChunkSink, moment: dt.datetime):
        self._sink = sink
        # Every member dated as of the export (UTC), so the bytes depend on the rows only.
        self._date_time = moment.astimezone(dt.UTC).timetuple()[:6]
        self._zip = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6)
        self.files: list[FileEntry] = []

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self._date_time)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return info

    @contextlib.contextmanager
    def jsonl(
        self, name: str, service: str, kind: str
    ) -> Iterator[Callable[[Sequence[Any]], None]]:
        """A member of JSON lines: the context gives a function that appends rows (one compact
        JSON object per line, keys sorted), counted and hashed as they go."""
        entry = FileEntry(name, service, kind)
        with self._zip.open(self._info(name), "w", force_zip64=True) as member:

            def write(rows: Sequence[Any]) -> None:
                lines = b"".join(orjson.dumps(row, option=_SORTED) + b"\n" for row in rows)
                member.write(lines)
                entry._sha256.update(lines)
                entry.bytes += len(lines)
                entry.rows += len(rows)

            yield write
        self.files.append(entry)

    def file(self, name: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        """A member of bytes written as its chunks come (a file's: one chunk held at a time);
        its size and SHA-256."""
        digest, size = hashlib.sha256(), 0
        with self._zip.open(self._info(name), "w", force_zip64=True) as member:
            for chunk in chunks:
                member.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    def add(self, name: str, data: bytes) -> None:
        """A small member written whole (the manifest)."""
        self._zip.writestr(self._info(name), data)

    def close(self) -> None:
        """The central directory, then the last chunk."""
        self._zip.close()
        self._sink.finish()
