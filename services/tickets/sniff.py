"""What a file is, from its first bytes: a short allow-list, never the client's claim.

A download is served with the type found here, ``X-Content-Type-Options: nosniff`` and
``Content-Disposition: attachment``, so a browser neither renders what a client called an image
nor guesses for itself. Only types that are inert when saved and opened are named; anything else
is ``application/octet-stream``. HTML, SVG and XML are text, and come back as ``text/plain``
(never ``text/html``): a file of script is shown as its source, if opened in a browser at all.
"""

from __future__ import annotations

OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"

# (offset, magic bytes, type), the first match wins.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"PK\x05\x06", "application/zip"),
)
_WEBP = (b"RIFF", b"WEBP")
# How much of a file is looked at: enough for every magic number, and for text to show itself.
SNIFF_BYTES = 4096
# Text may hold tab, line feed, form feed and carriage return; no other control character.
_CONTROL = frozenset(range(0x20)) - {0x09, 0x0A, 0x0C, 0x0D} | {0x7F}


def sniff(head: bytes) -> str:
    """The type of a file whose first bytes are ``head`` (at most ``SNIFF_BYTES`` are read)."""
    head = head[:SNIFF_BYTES]
    for offset, magic, kind in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return kind
    if head[:4] == _WEBP[0] and head[8:12] == _WEBP[1]:
        return "image/webp"
    return TEXT if _is_text(head) else OCTET_STREAM


def _is_text(head: bytes) -> bool:
    if not head or _CONTROL.intersection(head):
        return False
    # A multi-byte character may be cut at the end of what was read: up to 3 bytes are let go.
    for cut in range(4):
        try:
            head[: len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            if len(head) - cut <= 1:
                return False
    return False
