"""kernel.mail.inbound: what a mail's bytes become, what is refused and with which reply."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage

import pytest

from kernel.mail.inbound import Limits, Refused, html_to_text, parse

CARD = "4111 1111 1111 1111"
LIMITS = Limits(
    message_bytes=1 << 20, recipients=2, parts=10, depth=4, header_bytes=4096, file_bytes=1000
)


def message(text: str = "Hello", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = headers.pop("From", "Jane Canary <Jane@Customer.Example>")
    msg["To"] = "t@in.example"
    msg["Subject"] = headers.pop("Subject", "Help")
    msg["Message-ID"] = headers.pop("Message_ID", "<m1@customer.example>")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    return msg


def raw(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=email.policy.SMTP)


def refused(data: bytes, sender: str = "jane@customer.example") -> Refused:
    with pytest.raises(Refused) as caught:
        parse(data, sender, LIMITS)
    return caught.value


def test_a_plain_mail_gives_its_sender_words_and_ids():
    got = parse(raw(message("Line one\nLine two\n")), "jane@customer.example", LIMITS)
    assert (got.sender, got.sender_name) == ("jane@customer.example", "Jane Canary")
    assert (got.subject, got.text) == ("Help", "Line one\nLine two")
    assert got.message_id == "<m1@customer.example>"
    assert got.automatic is None and got.files == ()


def test_card_numbers_are_cut_in_subject_text_name_and_file_names():
    msg = message(f"pay with {CARD}", Subject=f"card {CARD}", From=f"{CARD} <a@b.example>")
    msg.add_attachment(b"data", maintype="application", subtype="pdf", filename=f"{CARD}.pdf")
    got = parse(raw(msg), "a@b.example", LIMITS)
    for value in (got.subject, got.text, got.sender_name, got.files[0].filename):
        assert "1111 1111" not in value and "1111" in value
    assert got.redactions == 4


def test_html_only_mail_is_reduced_to_text_without_markup_or_script():
    msg = message()
    msg.set_content(
        "<html><head><style>p{}</style></head><body><p>Hi&nbsp;there</p>"
        "<script>steal()</script><div>second<br>line</div></body></html>",
        subtype="html",
    )
    got = parse(raw(msg), "jane@customer.example", LIMITS)
    assert got.text == "Hi there\n\nsecond\nline"
    assert html_to_text("<ul><li>a</li><li>b</li></ul>") == "a\n\nb"


def test_plain_text_is_preferred_to_its_html_alternative():
    msg = message("the plain words")
    msg.add_alternative("<p>the html words</p>", subtype="html")
    assert parse(raw(msg), "j@c.example", LIMITS).text == "the plain words"


def test_references_come_in_reply_first_then_newest_first_once_each():
    msg = message(In_Reply_To="<c@x>", References="<a@x> <b@x> <c@x>")
    assert parse(raw(msg), "j@c.example", LIMITS).references == ("<c@x>", "<b@x>", "<a@x>")


def test_a_mail_without_message_id_is_named_by_its_bytes():
    msg = message()
    del msg["Message-ID"]
    first = parse(raw(msg), "j@c.example", LIMITS).message_id
    assert first.startswith("<sha256.") and first == parse(raw(msg), "j@c", LIMITS).message_id


@pytest.mark.parametrize(
    ("sender", "headers", "kind"),
    [
        ("", {}, "bounce"),
        ("<>", {}, "bounce"),
        ("j@c.example", {"From": "MAILER-DAEMON@c.example"}, "bounce"),
        ("j@c.example", {"Auto_Submitted": "auto-replied"}, "auto-reply"),
        ("j@c.example", {"X_Autoreply": "yes"}, "auto-reply"),
        ("j@c.example", {"X_Autorespond": "yes"}, "auto-reply"),
        ("j@c.example", {"Precedence": "bulk"}, "auto-reply"),
        ("j@c.example", {"Precedence": "junk"}, "auto-reply"),
        ("j@c.example", {"Precedence": "auto_reply"}, "auto-reply"),
        ("j@c.example", {"X_Auto_Response_Suppress": "All"}, "auto-reply"),
        ("j@c.example", {"Auto_Submitted": "no"}, None),
    ],
)
def test_bounces_and_auto_replies_are_recognised(sender, headers, kind):
    assert parse(raw(message(**headers)), sender, LIMITS).automatic == kind


def test_a_delivery_status_report_is_a_bounce():
    msg = message()
    msg.make_mixed()
    msg.replace_header("Content-Type", 'multipart/report; report-type=delivery-status; b="x"')
    msg.set_param("boundary", "x")
    assert parse(raw(msg), "j@c.example", LIMITS).automatic == "bounce"


def test_files_are_named_as_names_not_paths_and_limited():
    msg = message()
    msg.add_attachment(b"abc", maintype="application", subtype="pdf", filename="..\\dir/x.pdf")
    msg.add_attachment(b"plain", maintype="text", subtype="plain", disposition="attachment")
    got = parse(raw(msg), "j@c.example", LIMITS)
    assert [(f.filename, f.content) for f in got.files] == [
        ("x.pdf", b"abc"),
        ("attachment-2.txt", b"plain"),
    ]
    big = message()
    big.add_attachment(b"\0" * 1001, maintype="application", subtype="zip", filename="z.zip")
    assert refused(raw(big)).reply.startswith("552 5.3.4 an attached file is larger than 1000")


def test_malformed_mime_is_refused_554():
    head = b"From: j@c.example\r\nSubject: x\r\n"
    no_boundary = head + b'Content-Type: multipart/mixed; boundary="q"\r\n\r\nnothing\r\n'
    assert refused(no_boundary).reply.startswith("554 5.6.0 malformed MIME")
    assert refused(head + b"no blank line ever").reply.startswith("554 5.6.0")
    assert refused(b"Subject: x\r\n\r\nno sender\r\n").reply == (
        "554 5.6.0 the message's From is not one address"
    )
    two = b"From: a@b.example, c@d.example\r\n\r\nx\r\n"
    assert refused(two).code == 554


def test_a_mail_bomb_is_refused_before_it_is_kept():
    many = message()
    for n in range(12):
        many.add_attachment(f"{n}".encode(), maintype="text", subtype="plain", filename=f"{n}")
    assert refused(raw(many)).reply.startswith("554 5.6.0 the message has more than 10 MIME")
    deep = b"x\r\n"
    for level in range(6):
        b = f"b{level}".encode()
        deep = (
            b"Content-Type: multipart/mixed; boundary="
            + b
            + b"\r\n\r\n--"
            + b
            + b"\r\n"
            + deep
            + b"\r\n--"
            + b
            + b"--\r\n"
        )
    assert refused(b"From: j@c.example\r\n" + deep).reply == (
        "554 5.6.0 MIME parts nested deeper than 4"
    )
    headers = b"From: j@c.example\r\n" + b"X-Pad: aaaaaaaa\r\n" * 400 + b"\r\nhi\r\n"
    assert refused(headers).reply == "552 5.3.4 the message's headers are larger than 4096 bytes"
    assert refused(b"From: j@c.example\r\n\r\n" + b"a" * (1 << 20)).code == 552


def test_long_text_is_cut_and_says_so():
    got = parse(raw(message("word " * 30_000)), "j@c.example", LIMITS)
    assert len(got.text) <= 100_000 and got.text.endswith("and was cut]")


def _bomb(delimiters: int, spelling: bytes) -> bytes:
    """One multipart, one boundary, and far more delimiter lines than parts may be."""
    return (
        b"From: j@c.example\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed;"
        + spelling
        + b"\r\n\r\n"
        + b"--zz\r\n\r\n" * delimiters
        + b"--zz--\r\n"
    )


@pytest.mark.parametrize(
    "spelling", [b' boundary="zz"', b' boundary = "zz"', b" boundary*=us-ascii''zz"]
)
def test_a_bomb_of_delimiters_is_refused_before_the_parser_runs(monkeypatch, spelling):
    import kernel.mail.inbound as inbound

    calls = []
    real = inbound.email.message_from_bytes

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(inbound.email, "message_from_bytes", counted)
    assert (
        refused(_bomb(5_000, spelling)).reply == "554 5.6.0 the message has more than 10 MIME parts"
    )
    assert calls == []
    # Within the limit the same mail is parsed (the counter counts): the check is the limit's.
    parse(_bomb(4, spelling), "j@c.example", LIMITS)
    assert calls == [1]


def test_a_text_with_dashed_lines_within_the_slack_is_not_a_bomb():
    signed = message("Thanks\n-- \nJane\n--\nJane's phone\n")
    assert parse(raw(signed), "j@c.example", LIMITS).text.startswith("Thanks")


def test_a_card_number_across_a_limit_is_redacted_before_the_cut():
    import re

    from kernel.mail.inbound import (
        _TRUNCATED,
        MAX_FILENAME_CHARS,
        MAX_SUBJECT_CHARS,
        MAX_TEXT_CHARS,
    )

    # Each number starts just before its field's limit, so a cut made first would keep twelve
    # or more of its digits, then no card number to find.
    subject = "x" * (MAX_SUBJECT_CHARS - 15) + " " + CARD
    room = MAX_TEXT_CHARS - len(_TRUNCATED)
    text = "y" * (room - 15) + " " + CARD + " " + "z" * 200
    long_name = "n" * (MAX_FILENAME_CHARS - 13) + CARD.replace(" ", "") + ".txt"
    msg = message(text, Subject=subject, From=f"{'J' * 184} {CARD} <j@c.example>")
    msg.add_attachment(b"data", maintype="application", subtype="zip", filename=long_name)
    got = parse(raw(msg), "j@c.example", LIMITS)
    for value in (got.subject, got.text, got.sender_name, got.files[0].filename):
        assert re.search(r"\d[\d ]{10,}\d", value) is None, value[-40:]
        assert re.search(r"(\d\D?){12,}", value) is None, value[-40:]
    assert len(got.subject) <= MAX_SUBJECT_CHARS and len(got.text) <= MAX_TEXT_CHARS
    assert len(got.files[0].filename) <= MAX_FILENAME_CHARS and len(got.sender_name) <= 200
    assert got.text.endswith("and was cut]") and got.redactions == 4
