"""Loading commands: one way for every service to turn a request into a validated command."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields

from kernel.errors import ValidationFailed


class StrictBoolean(fields.Boolean):
    """Only a JSON boolean: "yes" or 1 is not an attestation or a consent."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def load_command(schema: type[Schema], data: Any) -> dict[str, Any]:
    """The command ``schema`` loads from ``data``, or ValidationFailed naming every field."""
    try:
        return schema().load(data)
    except ValidationError as exc:
        raise ValidationFailed(exc.normalized_messages()) from None
