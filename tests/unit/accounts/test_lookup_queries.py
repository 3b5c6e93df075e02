"""What counts as the same e-mail address or phone number in a lookup, and what a lookup
refuses before anything is looked up (the gateway and accounts load the query alike)."""

from __future__ import annotations

import pytest

from kernel.commands import load_command
from kernel.errors import ValidationFailed
from services.accounts import commands
from services.accounts.lookups import normalise_email, normalise_phone


def test_an_email_is_trimmed_and_lowercased():
    assert normalise_email("  Ada.Lovelace@Example.COM ") == "ada.lovelace@example.com"
    assert normalise_email("ada.lovelace@example.com") == "ada.lovelace@example.com"


def test_a_phone_is_its_digits_after_a_leading_plus():
    assert normalise_phone(" +44 (20) 7946-0958") == "+442079460958"
    assert normalise_phone("+442079460958") == "+442079460958"
    assert normalise_phone("020 7946 0958") == "02079460958"
    assert normalise_phone("0044.20.7946.0958") == "00442079460958"


def test_a_query_is_loaded_trimmed():
    loaded = load_command(
        commands.FindContactsV1, {"email": " Ada@Example.com ", "phone": " +44 20 7946 0958 "}
    )
    assert loaded == {"email": "Ada@Example.com", "phone": "+44 20 7946 0958"}


@pytest.mark.parametrize(
    "query, field",
    [
        ({"email": ""}, "email"),
        ({"email": "not-an-address"}, "email"),
        ({"email": "a" * 320 + "@example.com"}, "email"),
        ({"phone": ""}, "phone"),
        ({"phone": "call me"}, "phone"),
        ({"phone": "+" + "1" * 40}, "phone"),
        ({"name_prefix": ""}, "name_prefix"),
        ({"name_prefix": "x" * 201}, "name_prefix"),
        ({"updated_since": "yesterday"}, "updated_since"),
        ({"updated_since": "2026-01-01T00:00:00"}, "updated_since"),  # no offset
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_query_is_refused_naming_the_field(query, field):
    with pytest.raises(ValidationFailed) as refused:
        load_command(commands.FindContactsV1, query)
    assert list(refused.value.errors) == [field]


def test_an_agent_is_looked_up_by_email_only():
    assert load_command(commands.FindAgentsV1, {"email": "x@example.com"})
    with pytest.raises(ValidationFailed) as refused:
        load_command(commands.FindAgentsV1, {"phone": "+1 555 0100"})
    assert list(refused.value.errors) == ["phone"]
