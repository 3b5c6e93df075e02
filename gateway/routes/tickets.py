"""Routes to tickets: tickets and their messages."""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from gateway import schemas
from gateway.http import MAX_BODY_BYTES, RESOURCES, api, json_response, read_json, read_query
from gateway.idempotency import actor_scope
from gateway.pagination import order_of
from gateway.route import STAFF
from gateway.routes.base import Routes, etag, if_match


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
        errors=(400, 404, 409, 413, 422),
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
        summary="List tickets; filter by status, priority, tag, assignee, requester, when created"
        " or last changed; updated_since pages in the order they changed",
        response="TicketListOut",
        errors=(422,),
        listed=True,
        paging="changes",
        query="FindTicketsV1",
    )
    def list_tickets(self, request: Request) -> Response:
        caller = self._caller(request)
        query = read_query(request, schemas.FindTicketsV1())
        order = order_of(query)
        limit, after = self._page(request, order)
        page = self.tickets.list_tickets(caller["tenant_id"], query, limit, after)
        return self._listing(page, order)

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
        # The caller is the message's author: another agent's same key is another message.
        return self._idempotent(
            request,
            actor_scope(caller["tenant_id"], caller["agent_id"]),
            lambda: json_response(201, self.tickets.add_message(caller, ticket_id, command)),
        )
