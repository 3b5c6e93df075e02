"""Routes to personal-data breaches (accounts: ``services.accounts.incidents``): the operator
declares one and follows it; each affected tenant's admins read it, with the 72-hour clock of
GDPR Art. 33, and acknowledge it.

Admins only on the tenant's side: the notice is addressed to the controller, whose admins act
for it (notify the supervisory authority, the people concerned); an agent or an auditor gets
403, as on every admin route, and the ledger shows auditors that a notice was sent and who
acknowledged it. Allowed while the tenant is cancelled: during the grace its data is still
held, so a breach of it is still the tenant's to report.
"""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from gateway import schemas
from gateway.http import RESOURCES, api, json_response, read_json
from gateway.idempotency import actor_scope
from gateway.route import ADMIN
from gateway.routes.base import Routes


class IncidentRoutes(Routes):
    """Mixed into the gateway service: breaches and their notices."""

    @api(
        "POST",
        "/v1/operator/incidents",
        operator=True,
        summary=(
            "Declare a personal-data breach (operator): the affected tenants' active admins are"
            " notified by mail and in the console, and the ledger records the declaration, each"
            " notice and whom it went to. An unknown or destroyed tenant refuses it all (422)."
            " The answer is ids, times and states; GET the incident for its text"
        ),
        status=201,
        response="DeclaredIncidentOut",
        body="DeclareIncidentV1",
        errors=(400, 413, 422),
        idempotent=True,
    )
    def declare_incident(self, request: Request) -> Response:
        self._operator(request)
        command = read_json(request, schemas.DeclareIncidentV1())

        def produce() -> Response:
            incident = self.accounts.declare_incident(command)
            request.environ[RESOURCES] = [incident["id"]]
            return json_response(201, incident)

        return self._idempotent(request, "operator", produce)

    @api(
        "GET",
        "/v1/operator/incidents",
        operator=True,
        summary="Every declared breach, oldest first, and where each affected tenant stands"
        " (operator)",
        response="OperatorIncidentListOut",
        errors=(422,),
        listed=True,
    )
    def list_operator_incidents(self, request: Request) -> Response:
        self._operator(request)
        limit, after = self._page(request)
        return self._listing(self.accounts.operator_incidents(limit, after))

    @api(
        "GET",
        "/v1/operator/incidents/<string:incident_id>",
        operator=True,
        summary="A declared breach: whom it notified and who acknowledged, per tenant (operator)",
        response="OperatorIncidentOut",
        errors=(404,),
    )
    def get_operator_incident(self, request: Request, incident_id: str) -> Response:
        self._operator(request)
        return json_response(200, self.accounts.operator_incident(incident_id))

    @api(
        "GET",
        "/v1/incidents",
        roles=ADMIN,
        while_cancelled=True,
        summary="The breaches that affect the tenant, oldest first, each with its 72-hour clock"
        " and acknowledgements",
        response="IncidentListOut",
        errors=(422,),
        listed=True,
    )
    def list_incidents(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        return self._listing(self.accounts.tenant_incidents(caller["tenant_id"], limit, after))

    @api(
        "GET",
        "/v1/incidents/<string:incident_id>",
        roles=ADMIN,
        while_cancelled=True,
        summary="A breach that affects the tenant (404 for any other)",
        response="IncidentOut",
        errors=(404,),
    )
    def get_incident(self, request: Request, incident_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.accounts.tenant_incident(caller["tenant_id"], incident_id))

    @api(
        "POST",
        "/v1/incidents/<string:incident_id>/acknowledgements",
        roles=ADMIN,
        while_cancelled=True,
        summary=(
            "Acknowledge the breach notice as the calling admin: 201 the first time; once per"
            " admin, so a second answers 200 with the acknowledgement already on record"
        ),
        status=201,
        response="IncidentOut",
        also=((200, "IncidentOut", "acknowledged before by this admin: nothing new recorded"),),
        # 409: another admin's acknowledgement landed at the same moment (retry); 422: an
        # Idempotency-Key that cannot be one, or used for another request.
        errors=(404, 409, 422),
        idempotent=True,
    )
    def acknowledge_incident(self, request: Request, incident_id: str) -> Response:
        caller = self._caller(request)

        def produce() -> Response:
            notice = self.accounts.acknowledge_incident(caller, incident_id)
            recorded = notice.pop("recorded")
            return json_response(201 if recorded else 200, notice)

        # Each admin acknowledges for themself: another admin's same key is their own request.
        return self._idempotent(
            request, actor_scope(caller["tenant_id"], caller["agent_id"]), produce
        )
