"""Commands: the one base every service's command schemas extend, one way for every service,
and the gateway, to turn a request into a validated command, and the one place a card number in
a command is refused."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields

from kernel.cards import contains_card_number
from kernel.errors import ValidationFailed

# Field metadata of a free-text field whose card numbers its handler cuts to their last four
# digits (a ticket's subject, a message's body) instead of the command being refused. The
# OpenAPI document shows it as ``x-card-numbers: redacted``.
_MARK = "x-card-numbers"
CARD_NUMBERS_REDACTED = {_MARK: "redacted"}
CARD_NUMBER_REFUSED = "looks like a card number: card numbers are never stored"


class Command(Schema):
    """A command's schema: a field it does not know refuses the command rather than being
    dropped, so a misspelt field is an error the caller sees, not a change that never happens."""

    class Meta:
        unknown = RAISE


# Python's whitespace (str.isspace), spelt out for patterns: \s means something else in the
# ECMA-262 dialect of JSON Schema (no \x1c-\x1f nor \x85, but \ufeff), so a pattern the OpenAPI
# document publishes and the validation runs reads the same only without it.
SPACES = (
    r"\t\n\u000b\f\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)


class StrictBoolean(fields.Boolean):
    """Only a JSON boolean: "yes" or 1 is not an attestation or a consent."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class JsonInteger(fields.Integer):
    """A JSON Schema integer: a JSON number with no fractional part, ``30`` or ``30.0`` alike
    (the schema the document publishes says both are integers), never a string or a boolean."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return super()._deserialize(value, attr, data, **kwargs)


class UtcDateTime(fields.AwareDateTime):
    """An RFC 3339 time with its offset, loaded as UTC. Python reads offsets and years that
    PostgreSQL (or UTC itself) cannot hold (``0001-01-01T00:00:00+14:00``): such a time is
    invalid here, never a server error later."""

    def _deserialize(self, value, attr, data, **kwargs) -> dt.datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(dt.UTC)
        except OverflowError:
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE) from None


def load_command(schema: Schema | type[Schema], data: Any) -> dict[str, Any]:
    """The command ``schema`` loads from ``data``, or ValidationFailed naming every field.

    A card number in any string (or number) of ``data`` is refused before the schema runs,
    naming the field and never the value, unless the field's metadata is
    ``CARD_NUMBERS_REDACTED``. It runs first because a schema's errors name the fields it does
    not know, and such a name could be the number itself.
    """
    loader = schema() if isinstance(schema, type) else schema
    # One scan of everything first: the walk field by field costs a call per value, which a
    # body of many small values would multiply, and it only matters when there is a card.
    refused = _card_numbers(loader, data) if contains_card_number(data) else {}
    if refused:
        raise ValidationFailed(refused)
    try:
        return loader.load(data)
    except ValidationError as exc:
        raise ValidationFailed(exc.normalized_messages()) from None


Errors = dict[Any, Any] | list[str]


def _card_numbers(schema: Schema, data: Any) -> dict[Any, Any]:
    """Where ``data``, read by ``schema``, holds a card number: errors shaped as marshmallow's."""
    if not isinstance(data, Mapping):
        return {"_schema": [CARD_NUMBER_REFUSED]} if contains_card_number(data) else {}
    by_key = {field.data_key or name: field for name, field in schema.load_fields.items()}
    errors: dict[Any, Any] = {}
    for key, value in data.items():
        if contains_card_number(key):
            # A field the schema does not know, named by the number: say so without naming it.
            errors["_schema"] = [CARD_NUMBER_REFUSED]
            continue
        field = by_key.get(key)
        # A field the schema does not know is refused by it anyway, but not its value.
        found = _in_field(field, value) if field else _anywhere(value)
        if found:
            errors[key] = found
    return errors


def _in_field(field: fields.Field, value: Any) -> Errors:
    if field.metadata.get(_MARK) == CARD_NUMBERS_REDACTED[_MARK]:
        return []
    if isinstance(field, fields.UUID):
        # An id, not text: about one random UUID in 400 has dash-joined digit groups that
        # pass Luhn. Anything but a UUID is refused by the field without being echoed.
        return []
    if isinstance(field, fields.Nested) and isinstance(value, Mapping):
        return _card_numbers(field.schema, value)
    if isinstance(field, fields.List) and isinstance(value, list):
        inner = field.inner
        return {
            index: found for index, item in enumerate(value) if (found := _in_field(inner, item))
        }
    return _anywhere(value)


def _anywhere(value: Any) -> Errors:
    return [CARD_NUMBER_REFUSED] if contains_card_number(value) else []
