"""Routes to a tenant's webhook endpoints and their delivery logs (``gateway.webhooks``).

Admins only: an endpoint is the tenant's configuration, and it decides where the tenant's events
go and holds a secret. Agents and auditors get 403.
"""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from gateway import schemas
from gateway.http import RESOURCES, api, json_response, read_json
from gateway.route import ADMIN
from gateway.routes.base import Routes


class WebhookRoutes(Routes):
    """Mixed into the gateway service: webhook endpoints."""

    webhooks: Any  # the gateway's ``Webhooks`` dependency (gateway.webhooks.store)

    @api(
        "POST",
        "/v1/webhooks",
        roles=ADMIN,
        summary=(
            "Register an endpoint for some of this tenant's events; the answer shows its signing"
            " secret, once. 422 for a URL that is not https:// or whose host resolves to a"
            " loopback, private, link-local, multicast or reserved address"
        ),
        status=201,
        response="WebhookCreatedOut",
        body="RegisterWebhookV1",
        errors=(400, 409, 413, 422),
        idempotent=True,
    )
    def register_webhook(self, request: Request) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.RegisterWebhookV1())

        def produce() -> Response:
            created = self.webhooks.register(
                caller["tenant_id"], caller["agent_id"], command["url"], command["events"]
            )
            request.environ[RESOURCES] = [created["id"]]
            return json_response(201, created, {"Location": f"/v1/webhooks/{created['id']}"})

        return self._idempotent(request, caller["tenant_id"], produce)

    @api(
        "GET",
        "/v1/webhooks",
        roles=ADMIN,
        summary="This tenant's webhook endpoints, oldest first (never their secrets)",
        response="WebhookListOut",
        errors=(422,),
        listed=True,
    )
    def list_webhooks(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        return self._listing(self.webhooks.endpoints(caller["tenant_id"], limit, after))

    @api(
        "GET",
        "/v1/webhooks/<string:webhook_id>",
        roles=ADMIN,
        summary="A webhook endpoint (never its secret)",
        response="WebhookOut",
        errors=(404,),
    )
    def get_webhook(self, request: Request, webhook_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.webhooks.endpoint(caller["tenant_id"], webhook_id))

    @api(
        "DELETE",
        "/v1/webhooks/<string:webhook_id>",
        roles=ADMIN,
        summary="Delete an endpoint: nothing more is sent to it, and its delivery log goes too",
        status=204,
        errors=(404,),
    )
    def delete_webhook(self, request: Request, webhook_id: str) -> Response:
        caller = self._caller(request)
        self.webhooks.delete(caller["tenant_id"], webhook_id)
        return Response(status=204)

    @api(
        "GET",
        "/v1/webhooks/<string:webhook_id>/deliveries",
        roles=ADMIN,
        summary=(
            "The endpoint's delivery log, oldest first: each event owed to it, its state"
            " (pending, delivered, failed after the retry window) and every attempt's status"
            " code and outcome; no bodies"
        ),
        response="WebhookDeliveryListOut",
        errors=(404, 422),
        listed=True,
    )
    def list_webhook_deliveries(self, request: Request, webhook_id: str) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        return self._listing(
            self.webhooks.deliveries(caller["tenant_id"], webhook_id, limit, after)
        )

    @api(
        "POST",
        "/v1/webhooks/<string:webhook_id>/secret",
        roles=ADMIN,
        summary=(
            "Rotate the endpoint's signing secret: the answer shows the new one, once. Until"
            " `previous_secret_valid_until` (LEDGERDESK_WEBHOOK_SECRET_GRACE_HOURS, 24 h by"
            " default) every delivery's Ledgerdesk-Signature carries two `v1=`, under the new"
            " secret and the one it replaced; then only the new one. 409 if another rotation"
            " came in between, or for a replay of one already made with the same"
            " Idempotency-Key (its secret is never stored: rotate again)"
        ),
        response="WebhookSecretOut",
        errors=(404, 409, 422),
        idempotent=True,
    )
    def rotate_webhook_secret(self, request: Request, webhook_id: str) -> Response:
        caller = self._caller(request)

        def produce() -> Response:
            rotated = self.webhooks.rotate_secret(caller["tenant_id"], webhook_id)
            request.environ[RESOURCES] = [webhook_id]
            return json_response(200, rotated)

        return self._idempotent(
            request,
            caller["tenant_id"],
            produce,
            shown_once=(
                "this Idempotency-Key's rotation happened, and its new secret was shown once:"
                " rotate again (with a new key) to have one to use"
            ),
        )

    @api(
        "POST",
        "/v1/webhooks/<string:webhook_id>/pings",
        roles=ADMIN,
        summary=(
            "Send the endpoint a `webhook.ping` (data: the endpoint's id), signed, retried and"
            " logged like any delivery, whatever events it takes: the answer is the delivery"
            " as its log shows it, pending"
        ),
        status=202,
        response="WebhookDeliveryOut",
        errors=(404, 422),
        idempotent=True,
    )
    def ping_webhook(self, request: Request, webhook_id: str) -> Response:
        caller = self._caller(request)

        def produce() -> Response:
            delivery = self.webhooks.ping(caller["tenant_id"], webhook_id)
            request.environ[RESOURCES] = [webhook_id, delivery["id"]]
            return json_response(202, delivery)

        return self._idempotent(request, caller["tenant_id"], produce)
