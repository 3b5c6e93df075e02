"""Routes to tickets: tickets and their messages."""

from __future__ import annotations

import uuid

from werkzeug.wrappers import Request, Response

from gateway import schemas
from gateway.http import MAX_BODY_BYTES, RESOURCES, api, json_response, read_json
from gateway.route import STAFF, UUID, one_of, route_of
from gateway.routes.base import Routes, etag, if_match
from kernel.errors import ValidationFailed
from services.tickets.contracts import STATUSES as TICKET_STATUSES


class TicketRoutes(Routes):
    """Mixed into the gateway service: what tickets answers."""

    @api(
        "POST",
        "/v1/tickets",
        max_body_bytes=MAX_BODY_BYTES,
        roles=STAFF,
        summary="Open a ticket for a requester (a contact)",
        status=201,
        response="TicketOut",
        body="CreateTicketV1",
        errors=(400, 413, 422),
        idempotent=True,
        etag=True,
    )
    def create_ticket(self, request: Request) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.CreateTicketV1())

        def produce() -> Response:
            ticket = self.tickets.create_ticket(caller, command)
            request.environ[RESOURCES] = [ticket["id"], ticket["requester_id"]]
            return json_response(201, ticket, {"ETag": etag(ticket["version"])})

        return self._idempotent(request, caller["tenant_id"], produce)

    @api(
        "GET",
        "/v1/tickets",
        roles=STAFF,
        summary="List tickets; filter by status, assignee, requester",
        response="TicketListOut",
        errors=(422,),
        listed=True,
        filters={"status": one_of(TICKET_STATUSES), "assignee_id": UUID, "requester_id": UUID},
    )
    def list_tickets(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        filters = _ticket_filters(request)
        return self._listing(self.tickets.list_tickets(caller["tenant_id"], filters, limit, after))

    @api(
        "GET",
        "/v1/tickets/<string:ticket_id>",
        roles=STAFF,
        summary="One ticket with its messages",
        response="TicketDetailOut",
        errors=(404,),
        etag=True,
    )
    def get_ticket(self, request: Request, ticket_id: str) -> Response:
        caller = self._caller(request)
        ticket = self.tickets.get_ticket(caller, ticket_id)
        request.environ[RESOURCES] = [ticket["requester_id"]]
        return json_response(200, ticket, {"ETag": etag(ticket["version"])})

    @api(
        "PATCH",
        "/v1/tickets/<string:ticket_id>",
        roles=STAFF,
        summary="Change status, priority, assignee, tags or subject",
        response="TicketDetailOut",
        body="UpdateTicketV1",
        errors=(400, 404, 409, 413, 422, 428),
        if_match=True,
        etag=True,
    )
    def update_ticket(self, request: Request, ticket_id: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.UpdateTicketV1())
        version = if_match(request)
        ticket = self.tickets.update_ticket(caller, ticket_id, version, command)
        return json_response(200, ticket, {"ETag": etag(ticket["version"])})

    @api(
        "POST",
        "/v1/tickets/<string:ticket_id>/messages",
        max_body_bytes=MAX_BODY_BYTES,
        roles=STAFF,
        summary="Add a public reply or an internal note",
        status=201,
        response="MessageAddedOut",
        body="AddMessageV1",
        errors=(400, 404, 409, 413, 422),
        idempotent=True,
    )
    def add_message(self, request: Request, ticket_id: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.AddMessageV1())
        return self._idempotent(
            request,
            caller["tenant_id"],
            lambda: json_response(201, self.tickets.add_message(caller, ticket_id, command)),
        )


def _ticket_filters(request: Request) -> dict[str, str]:
    """The filters given, of those the route declares (``filters``), each checked against its
    declared schema: one of its values, or a UUID."""
    declared = route_of(request).filters
    filters = {name: request.args[name] for name in declared if request.args.get(name)}
    errors: dict[str, list[str]] = {}
    for name, value in filters.items():
        schema = declared[name]
        if "enum" in schema and value not in schema["enum"]:
            errors[name] = [f"must be one of: {', '.join(schema['enum'])}"]
        elif schema.get("format") == "uuid":
            try:
                uuid.UUID(value)
            except ValueError:
                errors[name] = ["not a valid UUID"]
    if errors:
        raise ValidationFailed(errors)
    return filters
