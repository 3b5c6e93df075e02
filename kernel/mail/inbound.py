"""An inbound mail, from its bytes to what a helpdesk keeps of it: plain Python, no I/O.

``parse`` refuses, before anything is stored, what is not a mail one can answer: malformed
MIME (554 5.6.0), a mail bomb (more parts than ``Limits.parts``, counted first from the
delimiter lines so a bomb is never parsed; nesting deeper than
``Limits.depth``, a header block past ``Limits.header_bytes``), a file past the attachment
limit (552 5.3.4). It recognises what no one should get a ticket for (``automatic``): a bounce
(a null reverse-path, a ``multipart/report`` delivery status) and an auto-reply (RFC 3834's
``Auto-Submitted`` other than ``no``, ``X-Autoreply``/``X-Autorespond``, ``Precedence: bulk``,
``junk``, ``list`` or ``auto_reply``, ``X-Auto-Response-Suppress``). The text is the first
``text/plain`` part, else the first ``text/html`` one reduced to text (``html.parser``); card
numbers are cut to their last four digits in the subject, the text, the sender's name and the
files' names (``kernel.cards``) here, so nothing downstream ever holds one.

The MIME parser is the standard library's ``email`` package (``email.policy.default``).
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import email.utils
import hashlib
import re
from dataclasses import dataclass
from email.message import EmailMessage, Message
from html.parser import HTMLParser
from typing import Any

from kernel.cards import redact_card_numbers
from kernel.mail.message import one_line

# What a ticket takes (services.tickets.commands): longer text is cut and says so.
MAX_SUBJECT_CHARS = 500
MAX_TEXT_CHARS = 100_000
MAX_FILENAME_CHARS = 255
MAX_NAME_CHARS = 200
# The references a threading decision looks at: a long thread's newest are enough.
MAX_REFERENCES = 50
_TRUNCATED = "\n\n[the rest of this mail was longer than a message may be, and was cut]"

# Defects that mean the structure cannot be trusted: a part may be missing or misread.
_FATAL_DEFECTS = (
    email.errors.NoBoundaryInMultipartDefect,
    email.errors.StartBoundaryNotFoundDefect,
    email.errors.CloseBoundaryNotFoundDefect,
    email.errors.MultipartInvariantViolationDefect,
    email.errors.InvalidMultipartContentTransferEncodingDefect,
    email.errors.MissingHeaderBodySeparatorDefect,
    email.errors.InvalidBase64CharactersDefect,
    email.errors.InvalidBase64LengthDefect,
)
_MSG_ID = re.compile(r"<[^<>\s]{1,250}>")
_AUTOMATIC_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})


class Refused(Exception):
    """A mail refused for good: the SMTP reply (code, enhanced status, text) says why. The
    text names the limit or the defect, never the mail's content."""

    def __init__(self, code: int, status: str, text: str):
        super().__init__(text)
        self.code, self.status, self.text = code, status, text

    @property
    def reply(self) -> str:
        return f"{self.code} {self.status} {self.text}"


def malformed(text: str) -> Refused:
    return Refused(554, "5.6.0", text)


def too_big(text: str) -> Refused:
    return Refused(552, "5.3.4", text)


@dataclass(frozen=True)
class Limits:
    """The settings' limits (LEDGERDESK_MAIL_IN_*), and the attachments' (per file, per
    message) which a mail's files meet as an upload's do."""

    message_bytes: int = 25 << 20
    recipients: int = 5
    parts: int = 100
    depth: int = 8
    header_bytes: int = 64 << 10
    file_bytes: int = 10 << 20
    files: int = 10

    @classmethod
    def of(cls, settings: Any) -> Limits:
        return cls(
            message_bytes=settings.mail_in_max_bytes,
            recipients=settings.mail_in_max_recipients,
            parts=settings.mail_in_max_parts,
            depth=settings.mail_in_max_depth,
            header_bytes=settings.mail_in_max_header_bytes,
            file_bytes=settings.attachment_max_bytes,
            files=settings.attachments_per_message,
        )


@dataclass(frozen=True)
class File:
    filename: str
    content: bytes


@dataclass(frozen=True)
class Inbound:
    """What a ticket is made of: the sender, the words, the files and the thread's ids."""

    sender: str  # the From address, lower-cased
    sender_name: str
    subject: str
    text: str
    # The sender's Message-ID, or a digest of the bytes when there is none: with the sender,
    # what makes a re-sent mail recognisably the same one.
    message_id: str
    references: tuple[str, ...] = ()
    files: tuple[File, ...] = ()
    redactions: int = 0
    # "bounce", "auto-reply" or None: an automatic mail is accepted and dropped.
    automatic: str | None = None

    def as_rpc(self) -> dict[str, Any]:
        """The mail as the receiving entrypoint's argument (in the process: the files stay
        bytes)."""
        return {
            "sender": self.sender,
            "sender_name": self.sender_name,
            "subject": self.subject,
            "text": self.text,
            "message_id": self.message_id,
            "references": list(self.references),
            "files": [(f.filename, f.content) for f in self.files],
            "redactions": self.redactions,
        }


def parse(raw: bytes, envelope_sender: str, limits: Limits) -> Inbound:
    """The mail in ``raw`` (as received, after the SMTP size limit), or ``Refused``."""
    if len(raw) > limits.message_bytes:
        raise too_big(f"the message is larger than {limits.message_bytes} bytes")
    _check_headers(raw, limits.header_bytes)
    _check_boundaries(raw, limits.parts)
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    except RecursionError:
        raise malformed(f"MIME parts nested deeper than {limits.depth}") from None
    assert isinstance(msg, EmailMessage)
    leaves = _leaves(msg, limits)
    try:
        sender_name, sender = _sender(msg)
        automatic = _automatic(msg, envelope_sender, sender)
        subject = one_line(str(msg.get("Subject") or ""))
        message_id = _message_id(msg, raw)
        references = _references(msg)
    except (ValueError, TypeError, IndexError, email.errors.HeaderParseError):
        raise malformed("a header could not be read") from None
    if automatic:
        return Inbound(sender, "", "", "", message_id, references, automatic=automatic)
    text, files = _content(leaves, limits)
    # Redacted whole, then cut: a number cut at the limit first would be no card number to
    # find, and its first digits would stay.
    subject, cut_subject = redact_card_numbers(subject)
    subject = subject[:MAX_SUBJECT_CHARS]
    text, cut_text = redact_card_numbers(text)
    text = _cut(text)
    sender_name, cut_name = redact_card_numbers(sender_name)
    sender_name = sender_name[:MAX_NAME_CHARS]
    redactions = cut_subject + cut_text + cut_name
    named = []
    for found in files:
        filename, cut = redact_card_numbers(found.filename)
        redactions += cut
        named.append(File(filename[:MAX_FILENAME_CHARS], found.content))
    return Inbound(
        sender=sender,
        sender_name=sender_name,
        subject=subject.strip() or "(no subject)",
        text=text,
        message_id=message_id,
        references=references,
        files=tuple(named),
        redactions=redactions,
    )


def _check_headers(raw: bytes, limit: int) -> None:
    end = _header_end(raw)
    if end is None:
        if len(raw) > limit:
            raise too_big(f"the message's headers are larger than {limit} bytes")
        raise malformed("the message has no body after its headers")
    if end > limit:
        raise too_big(f"the message's headers are larger than {limit} bytes")


def _header_end(raw: bytes) -> int | None:
    found = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return min(found) if found else None


# A line that opens with "--": every MIME delimiter does (RFC 2046), whatever the spelling of
# the boundary parameter that declared it (``boundary = "x"``, RFC 2231's ``boundary*=``).
_DELIMITER = re.compile(rb"(?m)^--")


def _check_boundaries(raw: bytes, parts: int) -> None:
    """Before the parser sees it: a mail with more delimiter lines than its parts could need
    is refused without building a tree of them. Each part is opened by one delimiter and
    each multipart closed by one, so a mail within the limit has at most twice as many (a
    text's own lines opening with "--", a signature's, fit in the slack). Counting stops at
    the first line past the limit: a bomb costs one scan of what it took to find it."""
    limit = 2 * parts
    for count, _ in enumerate(_DELIMITER.finditer(raw), start=1):
        if count > limit:
            raise malformed(f"the message has more than {parts} MIME parts")


def _leaves(msg: Message, limits: Limits) -> list[Message]:
    """The parts that hold content, depth-first, the limits and the defects checked."""
    leaves: list[Message] = []
    count = 0
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        count += 1
        if count > limits.parts:
            raise malformed(f"the message has more than {limits.parts} MIME parts")
        if depth > limits.depth:
            raise malformed(f"MIME parts nested deeper than {limits.depth}")
        for defect in part.defects:
            if isinstance(defect, _FATAL_DEFECTS):
                raise malformed(f"malformed MIME: {type(defect).__name__}")
        if part.is_multipart():
            children = part.get_payload()
            if not isinstance(children, list) or (
                part.get_content_maintype() == "multipart" and not children
            ):
                raise malformed("malformed MIME: a multipart with no parts")
            stack.extend(
                (child, depth + 1) for child in reversed(children) if isinstance(child, Message)
            )
        else:
            leaves.append(part)
    return leaves


def _sender(msg: Message) -> tuple[str, str]:
    found = email.utils.getaddresses([str(msg.get("From") or "")])
    addresses = [(name, address) for name, address in found if "@" in address]
    if len(addresses) != 1:
        raise malformed("the message's From is not one address")
    name, address = addresses[0]
    local, _, domain = address.rpartition("@")
    if not local or not domain or any(c.isspace() for c in address) or len(address) > 320:
        raise malformed("the message's From is not one address")
    return one_line(name), address.lower()


def _automatic(msg: Message, envelope_sender: str, sender: str) -> str | None:
    if envelope_sender in ("", "<>") or msg.get_content_type() == "multipart/report":
        return "bounce"
    if sender.split("@")[0] in ("mailer-daemon", "postmaster"):
        return "bounce"
    submitted = str(msg.get("Auto-Submitted") or "").strip().lower()
    if submitted and not submitted.startswith("no"):
        return "auto-reply"
    if msg.get("X-Autoreply") is not None or msg.get("X-Autorespond") is not None:
        return "auto-reply"
    if msg.get("X-Auto-Response-Suppress") is not None:
        return "auto-reply"
    if str(msg.get("Precedence") or "").strip().lower() in _AUTOMATIC_PRECEDENCE:
        return "auto-reply"
    return None


def _message_id(msg: Message, raw: bytes) -> str:
    found = _MSG_ID.findall(str(msg.get("Message-ID") or ""))
    if found:
        return found[0]
    return "<sha256." + hashlib.sha256(raw).hexdigest() + ">"


def _references(msg: Message) -> tuple[str, ...]:
    """In-Reply-To first, then References newest first: the order a thread is looked up in."""
    replied = _MSG_ID.findall(str(msg.get("In-Reply-To") or ""))
    chain = list(reversed(_MSG_ID.findall(str(msg.get("References") or ""))))
    seen: dict[str, None] = {}
    for ident in replied + chain:
        seen.setdefault(ident, None)
    return tuple(list(seen)[:MAX_REFERENCES])


def _content(leaves: list[Message], limits: Limits) -> tuple[str, list[File]]:
    plain: str | None = None
    html: str | None = None
    files: list[File] = []
    for part in leaves:
        filename = part.get_filename()
        disposition = part.get_content_disposition()
        kind = part.get_content_type()
        if filename is None and disposition != "attachment" and kind in ("text/plain", "text/html"):
            text = _text_of(part)
            if kind == "text/plain" and plain is None:
                plain = text
            elif kind == "text/html" and html is None:
                html = text
            continue
        if (
            filename is None
            and disposition != "attachment"
            and part.get_content_maintype()
            in (
                "multipart",
                "message",
            )
        ):
            continue
        content = _bytes_of(part)
        if not content:
            continue
        if len(content) > limits.file_bytes:
            raise too_big(f"an attached file is larger than {limits.file_bytes} bytes")
        files.append(File(_filename(filename, kind, len(files)), content))
        if len(files) > limits.files:
            raise too_big(f"the message carries more than {limits.files} files")
    text = plain if plain is not None and plain.strip() else html_to_text(html or "")
    return text.strip() or "(no text)", files


def _cut(text: str) -> str:
    """``text`` within what a message may be, saying so when it was cut (room left for that)."""
    if len(text) > MAX_TEXT_CHARS:
        return text[: MAX_TEXT_CHARS - len(_TRUNCATED)] + _TRUNCATED
    return text


def _text_of(part: Message) -> str:
    data = _bytes_of(part)
    charset = part.get_content_charset() or "utf-8"
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:  # a charset no codec knows: its bytes as UTF-8, what is readable of it
        text = data.decode("utf-8", errors="replace")
    # Stored as the API's text is: lines end in a line feed, however the mail carried them.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _bytes_of(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    if payload is None:
        return b""
    for defect in part.defects:  # decoding records what it found wrong
        if isinstance(defect, _FATAL_DEFECTS):
            raise malformed(f"malformed MIME: {type(defect).__name__}")
    return payload if isinstance(payload, bytes) else str(payload).encode()


def _filename(filename: str | None, kind: str, index: int) -> str:
    """A name to offer the file under: the sender's, as a name not a path, without control
    characters; else one from its position."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if ord(c) >= 0x20 and ord(c) != 0x7F).strip()
    if name in ("", ".", ".."):
        name = f"attachment-{index + 1}" + (".txt" if kind.startswith("text/") else "")
    return name  # cut to MAX_FILENAME_CHARS once its card numbers are redacted


# --- HTML to text ---------------------------------------------------------------------------

_BLOCKS = frozenset(
    "address article aside blockquote dd div dl dt fieldset figcaption figure footer form h1 h2"
    " h3 h4 h5 h6 header hr li main nav ol p pre section table tbody thead tfoot tr ul".split()
)
_HIDDEN = frozenset({"script", "style", "head", "title", "template", "noscript"})


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag == "br" or tag in _BLOCKS:
            self.out.append("\n")
        elif tag in ("td", "th"):
            self.out.append(" ")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag == "br" or tag in _BLOCKS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.out.append(data)


def html_to_text(html: str) -> str:
    """What a reader sees of ``html``: its words, a line per block, no markup, no script."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.out).splitlines())
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
