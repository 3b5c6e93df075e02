"""The webhook routes' request and response schemas (published through ``gateway.schemas``,
where the OpenAPI document finds every schema by name)."""

from marshmallow import Schema, fields, validate

from gateway.webhooks.addresses import MAX_URL_CHARS
from gateway.webhooks.catalogue import DELIVERED, EVENTS, NAMES, PING
from gateway.webhooks.sender import OUTCOMES
from kernel.commands import Command

_EVENTS_DESCRIPTION = "; ".join(f"`{e.name}`: {e.description}" for e in EVENTS)
DELIVERY_STATUSES = ("pending", "delivered", "failed")


class RegisterWebhookV1(Command):
    """``POST /v1/webhooks``."""

    url = fields.String(
        required=True,
        validate=validate.Length(min=1, max=MAX_URL_CHARS),
        metadata={
            "description": "https:// (http:// only where the operator allows it); its host must"
            " resolve to public addresses only, unless the operator allows private ones"
        },
    )
    events = fields.List(
        fields.String(validate=validate.OneOf(NAMES)),
        required=True,
        validate=validate.Length(min=1, max=len(NAMES)),
        metadata={"description": _EVENTS_DESCRIPTION},
    )


class WebhookOut(Schema):
    id = fields.UUID(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(validate=validate.OneOf(NAMES)), required=True)
    created_by = fields.UUID(required=True, metadata={"description": "the admin who registered it"})
    created_at = fields.DateTime(required=True)
    secret_rotated_at = fields.DateTime(
        required=True, allow_none=True, metadata={"description": "when its secret was last rotated"}
    )
    previous_secret_valid_until = fields.DateTime(
        required=True,
        allow_none=True,
        metadata={
            "description": "while a rotated-out secret still signs beside the current one: until"
            " when (null otherwise)"
        },
    )


class WebhookCreatedOut(WebhookOut):
    secret = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "the signing secret, shown once, never again (null in a replay of"
            " the answer to the same Idempotency-Key): Ledgerdesk-Signature is"
            ' `t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body under it>`'
        },
    )


class WebhookSecretOut(Schema):
    id = fields.UUID(required=True)
    secret = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "the new signing secret, shown once (null in a replay of the answer"
            " to the same Idempotency-Key)"
        },
    )
    rotated_at = fields.DateTime(required=True)
    previous_secret_valid_until = fields.DateTime(
        required=True,
        metadata={
            "description": "until then every delivery carries two `v1=` signatures, under the"
            " new secret and the one it replaced (LEDGERDESK_WEBHOOK_SECRET_GRACE_HOURS); then"
            " the old one is gone"
        },
    )


class WebhookListOut(Schema):
    items = fields.List(fields.Nested(WebhookOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class WebhookAttemptOut(Schema):
    attempt = fields.Integer(required=True)
    started_at = fields.DateTime(required=True)
    ended_at = fields.DateTime(required=True)
    status_code = fields.Integer(required=True, allow_none=True)
    outcome = fields.String(required=True, validate=validate.OneOf(OUTCOMES))


class WebhookDeliveryOut(Schema):
    id = fields.UUID(required=True)
    event_id = fields.UUID(
        required=True, metadata={"description": "the Ledgerdesk-Event-Id header: dedup on it"}
    )
    event_type = fields.String(
        required=True,
        validate=validate.OneOf(DELIVERED),
        metadata={"description": f"an event subscribed to, or `{PING}` (a ping asked for)"},
    )
    occurred_at = fields.DateTime(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(DELIVERY_STATUSES),
        metadata={"description": "failed: retried until the retry window closed (dead-lettered)"},
    )
    attempts = fields.Integer(required=True)
    status_code = fields.Integer(
        required=True, allow_none=True, metadata={"description": "of the last attempt"}
    )
    outcome = fields.String(
        required=True,
        allow_none=True,
        validate=validate.OneOf(OUTCOMES),
        metadata={"description": "of the last attempt"},
    )
    created_at = fields.DateTime(required=True)
    next_attempt_at = fields.DateTime(required=True, allow_none=True)
    finished_at = fields.DateTime(required=True, allow_none=True)
    history = fields.List(fields.Nested(WebhookAttemptOut), required=True)


class WebhookDeliveryListOut(Schema):
    items = fields.List(fields.Nested(WebhookDeliveryOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)
