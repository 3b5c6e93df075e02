"""Examples for the OpenAPI document, made from the schemas themselves.

Every request body and every answer of the document shows an example (``gateway.openapi``
adds them). They are built by walking each schema, not written beside it: a field added,
renamed or constrained changes its example with it, so an example cannot drift from what it
illustrates. Values are chosen by the field's name (``NAMED``: a name reads like a name, a
ticket's subject like a subject), else by its format, enum or bounds; a field's own
``metadata={"example": ...}`` (apispec's ``example``) wins over both. ``tests/unit/gateway``
validates every example against its schema.
"""

from __future__ import annotations

import uuid
from typing import Any

# One fictional tenant's world: the same id wherever a field names the same thing.
_NAMESPACE = uuid.UUID("6f1d2c9e-4b7a-4e21-9a3c-1d0e5b8f7a42")
MOMENT = "2026-01-05T10:00:00+00:00"
NAMED: dict[str, Any] = {
    "accept_policy_version": "2026-01",
    "policy_version": "2026-01",
    "version": "2026-01",
    "algorithm": "Ed25519",
    "api_key": "ldk_uk_3q2Jm0Zt8sKc1VYw7xN4bLhP9dRfA6eU5gTiO2yWkQs",
    "author_kind": "agent",
    "basis": "tax records: 6 years (HMRC)",
    "body": "My order 1042 arrived damaged; could I have a refund?",
    "brand": "visa",
    "city": "London",
    "company": "Acme Support Ltd",
    "content_type": "image/png",
    "country": "GB",
    "currency": "GBP",
    "description": "Ticket messages and their attachments",
    "detail": "the request is not valid",
    "email": "ada@example.com",
    "event_type": "ticket_created",
    "filename": "receipt.png",
    "key_id": "ledgerdesk+4f1c2a9b",
    "last4": "4242",
    "line1": "12 Analytical Row",
    "line2": "Floor 2",
    "name": "Ada Lovelace",
    "note": "ledgerdesk\n1042\nq1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c=\n",
    "number": "INV-2026-0001",
    "origin": "ledgerdesk",
    "phone": "+44 20 7946 0958",
    "plan": "team",
    "postcode": "EC1A 1BB",
    "processor_token": "tok_sandbox_visa",
    "public_key": "MCowBQYDK2VwAyEAq1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c=",
    "queue": "tickets.events",
    "q": "refund damaged",
    "reason": "identity confirmed by phone",
    "region": "uk",
    "secret": "whsec_Zk3q9Lm2Xc8Vb7Nn1Qw4Er6Ty",
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "signature": "b3Jk3q9Lm2Xc8Vb7Nn1Qw4Er6TyUi0Op5As1Df2Gh3Jk4Lz5Xc6Vb7Nm8Qw9Er0Ty==",
    "source": "signup form",
    "subject": "Refund for order 1042",
    "tags": "refund",
    "tag": "refund",
    "title": "Validation failed",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "url": "https://hooks.example.com/ledgerdesk",
    "verifier_key": "ledgerdesk+4f1c2a9b+AXq1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c=",
}


def example(schema: dict[str, Any], components: dict[str, Any], name: str = "") -> Any:
    """An example of ``schema`` (``$ref`` resolved in ``components``, the document's schemas)
    for a field called ``name``; None for bytes, which a JSON example cannot show."""
    if "$ref" in schema:
        return example(components[schema["$ref"].rsplit("/", 1)[-1]], components, name)
    if "example" in schema:
        return schema["example"]
    if schema.get("enum"):
        return next((value for value in schema["enum"] if value is not None), None)
    kind = schema.get("type")
    if isinstance(kind, list):  # nullable: show the value, not the null
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if not properties and isinstance(schema.get("additionalProperties"), dict):
            return {"example": example(schema["additionalProperties"], components, "example")}
        shown = {key: example(value, components, key) for key, value in properties.items()}
        if "maxProperties" in schema:  # exactly one of two, say: the first
            shown = dict(list(shown.items())[: schema["maxProperties"]])
        return shown
    if kind == "array":
        item = example(schema.get("items", {}), components, name.removesuffix("s"))
        return [item] * max(1, schema.get("minItems", 1))
    if kind == "boolean":
        # What a client leaves as it is, where a default says so: the usual case, and a
        # flag that combines with another only one way (an internal note on a requester's
        # behalf) is not set by chance.
        return schema.get("default", True)
    if kind in ("integer", "number"):
        low = schema.get("minimum", 1)
        return max(low, min(schema.get("maximum", 1), 1)) if kind == "integer" else 0.2
    if kind == "string":
        return _text(schema, name)
    return None


def _text(schema: dict[str, Any], name: str) -> str | None:
    fmt = schema.get("format")
    if fmt == "binary":
        return None
    if fmt == "uuid":
        return str(uuid.uuid5(_NAMESPACE, name or "id"))
    if fmt == "date-time":
        return MOMENT
    if fmt == "date":
        return MOMENT[:10]
    if fmt == "email":
        return NAMED["email"]
    if fmt in ("uri", "url"):
        return NAMED["url"]
    if fmt == "uri-reference":
        return "/docs/problems#validation-failed"
    if name in NAMED:
        return NAMED[name]
    if name == "id" or name.endswith("_id"):
        return str(uuid.uuid5(_NAMESPACE, name))
    if name.endswith("_at") or name in ("until", "valid_from"):
        return MOMENT
    text = name.replace("_", " ") or "text"
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    text = text.ljust(low, "x")
    return text[:high] if high is not None else text
