"""Unit tests for kernel.commands.load_command: the one card-number check of every command."""

from __future__ import annotations

import inspect
import json
import re
from types import ModuleType
from typing import Any

import pytest
from marshmallow import Schema, fields

from kernel.cards import contains_card_number
from kernel.commands import CARD_NUMBER_REFUSED, CARD_NUMBERS_REDACTED, load_command
from kernel.errors import ValidationFailed
from services.accounts import commands as accounts
from services.billing import commands as billing
from services.retention import commands as retention
from services.tickets import commands as tickets

VISA = "4111111111111111"
# The same card as people type it: the check must see it in every style the detector knows.
WRITTEN = ("4111 1111 1111 1111", "4111.1111.1111.1111", "4111\u00a01111\u00a01111\u00a01111")


def refused(schema: type[Schema] | Schema, data: Any) -> dict[str, Any]:
    with pytest.raises(ValidationFailed) as caught:
        load_command(schema, data)
    shown = json.dumps(caught.value.errors) + str(caught.value) + repr(caught.value.args)
    # Nothing of the number comes back: not whole, not as digits with their separators dropped.
    assert "1111" not in re.sub(r"\D", "", shown.replace("\\u00a0", "")), shown
    return caught.value.errors


def command_schemas() -> list[type[Schema]]:
    """Every command schema the services declare, so a new one is covered without a new test."""
    modules: list[ModuleType] = [accounts, billing, retention, tickets]
    return sorted(
        {
            value
            for module in modules
            for value in vars(module).values()
            if inspect.isclass(value)
            and issubclass(value, Schema)
            and value.__module__ == module.__name__
        },
        key=lambda schema: f"{schema.__module__}.{schema.__name__}",
    )


def text_fields(schema: Schema, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], bool]]:
    """(path, redacted?) of each string a command carries, through Nested and List fields."""
    found: list[tuple[tuple[Any, ...], bool]] = []
    for name, field in schema.load_fields.items():
        key = field.data_key or name
        inner, at = field, (*path, key)
        if isinstance(inner, fields.List):
            inner, at = inner.inner, (*at, 0)
        if isinstance(inner, fields.Nested):
            found += text_fields(inner.schema, at)
        elif isinstance(inner, fields.String):
            redacted = inner.metadata.get("x-card-numbers") == "redacted"
            found.append((at, redacted))
    return found


def placed(path: tuple[Any, ...], value: Any) -> Any:
    """A request holding ``value`` at ``path`` (list indexes as one-item lists)."""
    for step in reversed(path):
        value = [value] if isinstance(step, int) else {step: value}
    return value


def leaves(errors: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """(path, messages) of each complaint in marshmallow-shaped errors."""
    if not isinstance(errors, dict):
        return [(path, errors)]
    return [leaf for key, inner in errors.items() for leaf in leaves(inner, (*path, key))]


CASES = [
    pytest.param(schema, path, redacted, id=f"{schema.__name__}.{'.'.join(map(str, path))}")
    for schema in command_schemas()
    for path, redacted in text_fields(schema())
]


def test_the_table_covers_the_fields_the_issue_names() -> None:
    ids = {case.id for case in CASES}
    for expected in (
        "CreateContactV1.phone",
        "CreateContactV1.name",
        "CreateContactV1.email",
        "RectifyContactV1.phone",
        "SignUpV1.company",
        "SignUpV1.admin.name",
        "SetConsentV1.source",
        "FilePrivacyRequestV1.identity_check",
        "FilePrivacyRequestV1.changes.phone",
        "DecideRequestV1.reason",
        "CreateAgentV1.name",
        "SetBillingAddressV1.address.line1",
        "CreateTicketV1.tags.0",
        "CreateTicketV1.subject",
        "AddMessageV1.body",
    ):
        assert expected in ids


@pytest.mark.parametrize(("schema", "path", "redacted"), CASES)
@pytest.mark.parametrize("written", WRITTEN)
def test_a_card_number_in_any_text_field_is_refused_naming_the_field(
    schema: type[Schema], path: tuple[Any, ...], redacted: bool, written: str
) -> None:
    value = f"{written}@example.com" if path[-1] == "email" else f"x {written} y"
    data = placed(path, value)
    if redacted:
        # Redacted by the handler instead: other fields may be missing, but the card is not
        # what the schema complains about.
        try:
            load_command(schema, data)
        except ValidationFailed as exc:
            assert CARD_NUMBER_REFUSED not in json.dumps(exc.errors)
        return

    errors = refused(schema, data)

    # Refused before the schema runs: the card is the only complaint, at its field.
    assert leaves(errors) == [(path, [CARD_NUMBER_REFUSED])]


def test_lists_are_named_by_index_and_every_card_field_is_named() -> None:
    errors = refused(
        tickets.CreateTicketV1,
        {"subject": "s", "body": "b", "tags": ["vip", f"ref-{VISA}"]},
    )
    assert errors == {"tags": {1: [CARD_NUMBER_REFUSED]}}

    errors = refused(
        accounts.SignUpV1,
        {"company": f"Acme {VISA}", "admin": {"name": "Ann", "email": f"{VISA}@example.com"}},
    )
    assert errors == {
        "company": [CARD_NUMBER_REFUSED],
        "admin": {"email": [CARD_NUMBER_REFUSED]},
    }


@pytest.mark.parametrize(
    "request_",
    [
        {"processor_token": "tok_sandbox_visa", "note": "5555 5555 5555 4444"},
        {"processor_token": "tok_sandbox_visa", "card": {"number": 4111111111111111}},
        {"processor_token": "tok_sandbox_visa", "card": [{"n": 4111111111111111.0}]},
    ],
    ids=["extra-value", "nested-number", "float-in-a-list"],
)
def test_a_field_the_schema_does_not_know_is_checked_whole(request_: dict[str, Any]) -> None:
    errors = refused(billing.AddPaymentMethodV1, request_)
    [unknown] = set(request_) - {"processor_token"}
    assert errors == {unknown: [CARD_NUMBER_REFUSED]}


def test_a_field_named_by_a_card_number_is_refused_without_its_name() -> None:
    errors = refused(
        billing.AddPaymentMethodV1, {"processor_token": "tok_x", "3782-822463-10005": 1}
    )
    assert errors == {"_schema": [CARD_NUMBER_REFUSED]}
    errors = refused(accounts.SignUpV1, {"admin": {VISA: "x"}})
    assert errors == {"admin": {"_schema": [CARD_NUMBER_REFUSED]}}


def test_a_card_number_as_a_json_number_or_in_a_wrong_type_is_refused() -> None:
    assert refused(retention.SetPolicyV1, {"days": 4111111111111111}) == {
        "days": [CARD_NUMBER_REFUSED]
    }
    assert refused(accounts.CreateContactV1, {"name": ["a", {"b": VISA}]}) == {
        "name": [CARD_NUMBER_REFUSED]
    }
    assert refused(accounts.SignUpV1, {"admin": f"admin {VISA}"}) == {
        "admin": [CARD_NUMBER_REFUSED]
    }
    assert refused(accounts.SignUpV1, [VISA]) == {"_schema": [CARD_NUMBER_REFUSED]}


def test_redacted_fields_load_with_the_card_for_their_handler_to_cut() -> None:
    command = load_command(
        tickets.CreateTicketV1(),  # the gateway passes instances, the services classes
        {
            "subject": f"card {VISA}",
            "body": "4111.1111.1111.1111",
            "requester_id": "7e0c7f2c-8a4e-4a53-9b0e-0b6d3c2b4b1a",
        },
    )
    assert (command["subject"], command["body"]) == (f"card {VISA}", "4111.1111.1111.1111")
    assert load_command(tickets.AddMessageV1, {"body": VISA})["body"] == VISA


def test_an_id_is_not_text_even_when_its_digits_pass_luhn() -> None:
    # "707051-8433-4690" is 14 digits in dash-joined groups that pass Luhn: as text it would
    # be a card (about one random UUID in 400 holds such a run), but a UUID is an id.
    requester = "8a707051-8433-4690-8e11-57bf6b0446e1"
    assert not contains_card_number(requester)
    assert contains_card_number(requester.replace("8a", "", 1))

    command = load_command(
        tickets.CreateTicketV1, {"subject": "s", "body": "b", "requester_id": requester}
    )
    assert str(command["requester_id"]) == requester
    # Something else in an id field is refused by the field, which names no value.
    with pytest.raises(ValidationFailed) as caught:
        load_command(tickets.CreateTicketV1, {"subject": "s", "body": "b", "requester_id": VISA})
    assert caught.value.errors == {"requester_id": ["Not a valid UUID."]}


def test_a_command_without_a_card_number_loads_as_its_schema_says() -> None:
    assert load_command(
        accounts.CreateContactV1,
        {"name": "Ann 2", "email": "ann@example.com", "phone": "+44 20 7946 0958"},
    ) == {"name": "Ann 2", "email": "ann@example.com", "phone": "+44 20 7946 0958"}
    with pytest.raises(ValidationFailed) as caught:
        load_command(accounts.CreateContactV1, {"name": "Ann", "email": "not an email"})
    assert set(caught.value.errors) == {"email"}


def test_the_redacted_mark_is_the_one_the_openapi_document_shows() -> None:
    assert CARD_NUMBERS_REDACTED == {"x-card-numbers": "redacted"}
    from gateway.service import OPENAPI

    spec = json.dumps(OPENAPI)
    assert spec.count('"x-card-numbers": "redacted"') >= 3
