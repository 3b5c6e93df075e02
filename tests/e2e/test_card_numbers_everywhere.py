"""Card numbers in every free-text field of the API, over real HTTP and real processes.

A card number in any field of any command is refused where commands are loaded (422 naming
the field, the number never echoed) and nothing of it is stored anywhere; ticket subjects and
bodies keep being accepted with the card cut to its last four digits. Each request writes its
card in another of the styles people type or paste (dots, tabs, no-break spaces, other digit
scripts...), and every card is new, so any trace of one in a database is a leak.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest

from kernel.commands import CARD_NUMBER_REFUSED
from kernel.testing import wait_until
from services import platform
from tests.e2e.conftest import Stack
from tests.e2e.helpers import (
    assert_problem,
    audit_holds,
    file,
    fresh_card,
    make_contact,
    require_approval,
    second_admin,
    sign_up,
    stored_text,
    traced,
    unique,
)

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
# How people write a card, each a way the old detector (one space or dash) let through.
STYLES: dict[str, Callable[[str], str]] = {
    "spaces": lambda card: " ".join(re.findall("....", card)),
    "dots": lambda card: ".".join(re.findall("....", card)),
    "tabs": lambda card: "\t".join(re.findall("....", card)),
    "newlines": lambda card: "\r\n".join(re.findall("....", card)),
    "double spaces": lambda card: "  ".join(re.findall("....", card)),
    "no-break spaces": lambda card: "\u00a0".join(re.findall("....", card)),
    "en dashes": lambda card: " \u2013 ".join(re.findall("....", card)),
    "arabic-indic digits": lambda card: " ".join(re.findall("....", card.translate(ARABIC_INDIC))),
    "full-width digits": lambda card: "\uff0d".join(re.findall("....", card.translate(FULL_WIDTH))),
}


def written(style: str) -> tuple[str, str]:
    """A new card, and how ``style`` writes it."""
    card = fresh_card()
    return card, STYLES[style](card)


def digits_in(text: str) -> str:
    """The decimal digits of ``text`` as ASCII, in order, after JSON's \\u escapes are read."""
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    return "".join(str(unicodedata.decimal(c)) for c in text if c.isdecimal())


def held_anywhere(stack: Stack, key: str, cards: list[str]) -> list[str]:
    """Where any of ``cards`` is stored, in any database, once audit has caught up."""
    sentinel, trace_id = traced(stack, "GET", "/v1/me", key=key)
    assert sentinel.status_code == 200, sentinel.text
    # The ledger records every access through the gateway: once it has the sentinel's, it has
    # those of every request sent before it.
    wait_until(lambda: audit_holds(stack, trace_id), timeout=30, what="the sentinel in the ledger")
    found = []
    for service in (*platform.SERVICES, "gateway"):
        for column, text in stored_text(stack.settings.database_dsn(service)).items():
            digits = digits_in(text)
            found += [f"{service}: {column}" for card in cards if card in digits]
    return found


def at(path: tuple[str, ...], value: Any) -> Any:
    for step in reversed(path):
        value = {step: value}
    return value


def assert_refused(response, field: tuple[str, ...], card: str) -> None:
    body = assert_problem(response, 422)
    assert body["errors"] == at(field, [CARD_NUMBER_REFUSED]), body
    assert card not in digits_in(response.text)


def test_a_card_number_in_any_free_text_field_is_refused_and_kept_nowhere(stack):
    version = stack.call("GET", "/v1/policies/current").json()["version"]
    admin = sign_up(stack)
    key = admin["api_key"]
    other = second_admin(stack, key)
    someone = make_contact(stack, key, "Card Holder")
    require_approval(stack, key, ["erasure"])
    waiting = file(stack, key, {"type": "erasure", "subject": {"contact_id": someone["id"]}})
    assert waiting["status"] == "awaiting_approval"
    contact_path = f"/v1/contacts/{someone['id']}"
    decide = f"/v1/privacy/requests/{waiting['id']}"

    def signup(**changes: Any) -> dict[str, Any]:
        return {
            "company": unique("Card Co"),
            "region": "uk",
            "admin": {"name": "Ann", "email": f"{unique('ann')}@example.com"},
            "age_confirmed": True,
            "accept_policy_version": version,
            **changes,
        }

    def new_contact(**changes: Any) -> dict[str, Any]:
        return {"name": "Bo", "email": f"{unique('bo')}@example.com", **changes}

    # (style, caller's key, method, path, body with the card as {card}, the field named)
    cases: list[tuple[str, str | None, str, str, Callable[[str], Any], tuple[str, ...]]] = [
        ("spaces", key, "POST", "/v1/contacts", lambda c: new_contact(phone=c), ("phone",)),
        ("dots", key, "POST", "/v1/contacts", lambda c: new_contact(phone=c), ("phone",)),
        (
            "no-break spaces",
            key,
            "POST",
            "/v1/contacts",
            lambda c: new_contact(name=f"Bo {c}"),
            ("name",),
        ),
        (
            "arabic-indic digits",
            key,
            "POST",
            "/v1/contacts",
            lambda c: new_contact(email=f"{c}@example.com"),
            ("email",),
        ),
        ("tabs", key, "PATCH", contact_path, lambda c: {"phone": c}, ("phone",)),
        ("double spaces", None, "POST", "/v1/signup", lambda c: signup(company=c), ("company",)),
        (
            "en dashes",
            None,
            "POST",
            "/v1/signup",
            lambda c: signup(admin={"name": f"Ann {c}", "email": "ann@example.com"}),
            ("admin", "name"),
        ),
        (
            "newlines",
            key,
            "PUT",
            f"{contact_path}/consent",
            lambda c: {"marketing": True, "source": f"form {c}"},
            ("source",),
        ),
        (
            "full-width digits",
            key,
            "POST",
            "/v1/privacy/requests",
            lambda c: {
                "type": "access",
                "subject": {"contact_id": someone["id"]},
                "identity_check": f"showed card {c}",
            },
            ("identity_check",),
        ),
        (
            "dots",
            key,
            "POST",
            "/v1/privacy/requests",
            lambda c: {
                "type": "rectification",
                "subject": {"contact_id": someone["id"]},
                "changes": {"phone": c},
            },
            ("changes", "phone"),
        ),
        ("spaces", other, "POST", f"{decide}/approve", lambda c: {"reason": c}, ("reason",)),
        ("tabs", other, "POST", f"{decide}/deny", lambda c: {"reason": f"x {c}"}, ("reason",)),
        (
            "no-break spaces",
            key,
            "POST",
            "/v1/agents",
            lambda c: {"name": c, "email": f"{unique('ag')}@example.com", "role": "agent"},
            ("name",),
        ),
    ]
    cards = []
    for style, caller, method, path, body, field in cases:
        card, text = written(style)
        cards.append(card)
        response = stack.call(method, path, key=caller, json=body(text))
        assert_refused(response, field, card)

    # Nothing the refused requests asked for happened...
    assert stack.call("GET", contact_path, key=key).json()["phone"] == someone["phone"]
    assert stack.call("GET", f"{contact_path}/consent", key=key).json()["history"] == []
    assert stack.call("GET", decide, key=key).json()["status"] == "awaiting_approval"
    assert len(stack.call("GET", "/v1/contacts", key=key).json()["items"]) == 1
    assert len(stack.call("GET", "/v1/agents", key=key).json()["items"]) == 2
    # ...and no database holds any of the cards, in any of the ways it was written.
    assert held_anywhere(stack, key, cards) == []


def test_a_consent_source_with_a_card_number_never_reaches_the_ledger(stack):
    key = sign_up(stack)["api_key"]
    someone = make_contact(stack, key, "Consent Giver")
    path = f"/v1/contacts/{someone['id']}/consent"
    card, text = written("dots")

    refused = stack.call("PUT", path, key=key, json={"marketing": True, "source": f"web {text}"})
    assert_refused(refused, ("source",), card)
    accepted = stack.call("PUT", path, key=key, json={"marketing": True, "source": "web form"})
    assert accepted.status_code == 200, accepted.text

    # The source is published with consent_recorded, so it is in the ledger for good: once the
    # accepted consent is there, the refused one would be before it.
    def consents() -> list[dict[str, Any]] | None:
        entries = stack.call(
            "GET", "/v1/audit/entries", key=key, params={"type": "consent_recorded"}
        ).json()["items"]
        mine = [e for e in entries if someone["id"] in e["subject_ids"]]
        return mine or None

    [recorded] = wait_until(consents, timeout=30, what="the accepted consent in the ledger")
    assert card not in digits_in(str(recorded))
    assert held_anywhere(stack, key, [card]) == []


@pytest.mark.parametrize("style", ["dots", "no-break spaces", "arabic-indic digits", "tabs"])
def test_ticket_text_is_cut_to_the_last_four_digits_not_refused(stack, style):
    key = sign_up(stack)["api_key"]
    requester = make_contact(stack, key, "Ticket Writer")["id"]
    card, text = written(style)
    other, other_text = written(style)
    shown = f"[card ending {card[-4:]}]"

    created = stack.call(
        "POST",
        "/v1/tickets",
        key=key,
        json={"subject": f"charged {text}", "body": f"my card:\n{text}", "requester_id": requester},
    )
    assert created.status_code == 201, created.text
    ticket = created.json()
    assert (ticket["subject"], ticket["body"]) == (f"charged {shown}", f"my card:\n{shown}")
    replied = stack.call(
        "POST",
        f"/v1/tickets/{ticket['id']}/messages",
        key=key,
        json={"body": f"{other_text} too", "internal": True},
    )
    assert replied.status_code == 201, replied.text
    assert replied.json()["body"] == f"[card ending {other[-4:]}] too"
    # A tag is a label, not text a customer writes: a card there refuses the ticket.
    tagged_card, tagged = written(style)
    tagged_ticket = stack.call(
        "POST",
        "/v1/tickets",
        key=key,
        json={"subject": "s", "body": "b", "requester_id": requester, "tags": [tagged]},
    )
    body = assert_problem(tagged_ticket, 422)
    # Refused before the tag's own rule (no whitespace) is read: the card is the complaint.
    assert body["errors"] == {"tags": {"0": [CARD_NUMBER_REFUSED]}}
    assert tagged_card not in digits_in(tagged_ticket.text)
    for response in (created, replied):
        assert card not in digits_in(response.text) and other not in digits_in(response.text)
    assert held_anywhere(stack, key, [card, other, tagged_card]) == []
