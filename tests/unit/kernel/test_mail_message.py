"""Rendering a mail: what a client typed with line breaks in it stays one header line."""

from __future__ import annotations

import email
import email.policy

import pytest

from kernel.mail.message import Mail, one_line

TRICKY = ["Order\nproblem", "Order\r\nBcc: x@example.org", "a\x0bb", "a\u2028b", "a\x85b", "a\x1cb"]


@pytest.mark.parametrize("text", TRICKY)
def test_a_subject_or_name_with_a_line_break_renders_as_one_header_line(text):
    mail = Mail(
        sender="Desk <help@desk.example.test>",
        to_name=f"Ann {text} Lee",
        to_address="ann@example.test",
        subject=f"Re: {text}",
        body="hello",
        message_id="<reply.1@desk.example.test>",
    )
    parsed = email.message_from_bytes(mail.render(0), policy=email.policy.default)
    assert parsed["Subject"] == f"Re: {one_line(text)}"
    assert "\n" not in parsed["Subject"] and "\r" not in parsed["Subject"]
    assert parsed["To"].addresses[0].display_name == f"Ann {one_line(text)} Lee"
    assert parsed["Bcc"] is None  # nothing typed became a header of its own
    assert parsed.get_content().strip() == "hello"


def test_one_line_keeps_the_words_and_their_order():
    assert one_line("  Where \t is\nmy   parcel? ") == "Where is my parcel?"
