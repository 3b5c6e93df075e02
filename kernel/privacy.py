"""The privacy protocol every service speaks: commands from retention, answers back.

Retention publishes a ``privacy_command`` (durable, through its outbox) that every service's own
``<service>.privacy`` queue receives; each service does what the command means for its own data
and publishes a ``privacy_answered`` event: ``done``, ``retained`` (with the legal basis and the
day the hold ends) or ``failed`` (with a reason). Answers carry ids and outcomes only, so the
audit ledger records every step without recording anyone's data. A service announces itself
(``service_announced``) on every start, so retention knows whom to wait for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import Schema, fields, validate
from nameko.extensions import DependencyProvider

from kernel.envelope import Envelope, EventType, new_envelope
from kernel.topology import Subscription
from kernel.uow import UnitOfWork

COMMANDS = (
    "erase_subject",
    "restrict_subject",
    "lift_restriction",
    "object_to_marketing",
    "rectify_subject",
    "destroy_tenant",
    "purge_category",
)
OUTCOMES = ("done", "retained", "failed")
PROTOCOL_VERSION = 1


class PrivacyCommandV1(Schema):
    request_id = fields.UUID(required=True)
    command = fields.String(required=True, validate=validate.OneOf(COMMANDS))
    tenant_id = fields.UUID(required=True, allow_none=True)
    subject_id = fields.UUID(load_default=None, allow_none=True)
    subject_kind = fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(("contact", "agent", "tenant"))
    )
    # For purge_category: the data category and the moment before which it goes.
    category = fields.String(load_default=None, allow_none=True)
    before = fields.String(load_default=None, allow_none=True)


class PrivacyCommandV2(PrivacyCommandV1):
    """Adds the services that act on the command: a re-send names those that still owe an
    answer, so the others do not do the work again; null means every service (as in v1)."""

    services = fields.List(fields.String(), required=True, allow_none=True)


class PrivacyCommandV3(PrivacyCommandV2):
    """Adds per-tenant cut-offs to a purge: each tenant named loses what of the category lies
    before its own moment, every other tenant what lies before ``before`` (a tenant's retention
    override next to the platform's default, in one command). Null: ``before`` for every tenant
    (as in v1 and v2)."""

    cutoffs = fields.Dict(
        keys=fields.UUID(), values=fields.String(), required=True, allow_none=True
    )


class PrivacyAnsweredV1(Schema):
    request_id = fields.UUID(required=True)
    command = fields.String(required=True, validate=validate.OneOf(COMMANDS))
    service = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(OUTCOMES))
    detail = fields.String(required=True)
    basis = fields.String(load_default=None, allow_none=True)
    until = fields.String(load_default=None, allow_none=True)


class ServiceAnnouncedV1(Schema):
    service = fields.String(required=True)
    categories = fields.List(fields.String(), required=True)
    commands = fields.List(fields.String(), required=True)
    protocol_version = fields.Integer(required=True)


PRIVACY_COMMAND = EventType(
    "privacy_command",
    {1: PrivacyCommandV1, 2: PrivacyCommandV2, 3: PrivacyCommandV3},
    upcasters={
        1: lambda payload: {**payload, "services": None},
        2: lambda payload: {**payload, "cutoffs": None},
    },
)
PRIVACY_ANSWERED = EventType("privacy_answered", {1: PrivacyAnsweredV1})
SERVICE_ANNOUNCED = EventType("service_announced", {1: ServiceAnnouncedV1})

# A command handler: (unit of work, command payload) -> the answer's status, detail and extras.
# The payload is the latest version's, plus ``issued_at``: when retention sent the command. A
# handler must be idempotent: a restored service runs it again (``kernel.forgetting``).
Handler = Callable[[UnitOfWork, dict[str, Any]], dict[str, Any]]


def subscription(service: str) -> Subscription:
    return Subscription(f"{service}.privacy", ("retention.privacy_command",))


def handle_command(
    uow: UnitOfWork, service: str, event: Envelope, handlers: Mapping[str, Handler]
) -> None:
    """Run this service's handler for a command once, and publish its answer in the same
    transaction. A command the service has nothing for answers ``done``."""
    payload, version = PRIVACY_COMMAND.upcast(dict(event.payload), event.schema_version)
    command = {**PRIVACY_COMMAND.validate(payload, version), "issued_at": event.occurred_at}
    if command["services"] is not None and service not in command["services"]:
        return  # a re-send meant for the services that still owe an answer
    if not uow.first_delivery(f"{service}.privacy", event.event_id):
        return
    handler = handlers.get(command["command"])
    if handler is None:
        outcome = {"status": "done", "detail": f"{service} holds nothing this command concerns"}
    else:
        try:
            outcome = handler(uow, command)
        except Exception as exc:  # the failure is the answer; retention decides what follows
            outcome = {"status": "failed", "detail": f"{type(exc).__name__} in {service}"}
            uow.rollback()
            uow.first_delivery(f"{service}.privacy", event.event_id)
    uow.publish(
        new_envelope(
            type="privacy_answered",
            schema_version=1,
            source=service,
            stream_id=f"privacy-{command['request_id']}",
            stream_version=1,
            tenant_id=command["tenant_id"],
            actor_id=service,
            payload={
                "request_id": str(command["request_id"]),
                "command": command["command"],
                "service": service,
                "status": outcome["status"],
                "detail": outcome.get("detail", ""),
                "basis": outcome.get("basis"),
                "until": outcome.get("until"),
            },
            trace=uow.trace,
        )
    )


class Announcement(DependencyProvider):
    """Publishes ``service_announced`` on every start, through the service's outbox."""

    def __init__(self, categories: tuple[str, ...], commands: tuple[str, ...] = COMMANDS):
        self.categories = categories
        self.commands = commands

    def start(self) -> None:
        from kernel.nameko_adapters.store import store_of

        store = store_of(self.container)
        service = self.container.service_name
        with store.unit_of_work(service) as uow:
            uow.publish(
                new_envelope(
                    type="service_announced",
                    schema_version=1,
                    source=service,
                    stream_id=f"service-{service}",
                    stream_version=1,
                    tenant_id=None,
                    actor_id=service,
                    payload={
                        "service": service,
                        "categories": list(self.categories),
                        "commands": list(self.commands),
                        "protocol_version": PROTOCOL_VERSION,
                    },
                )
            )
