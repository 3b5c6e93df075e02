"""The gateway: the one HTTP entry. Authenticates, scopes to the key's tenant, calls services."""

from __future__ import annotations

from typing import Any

from kombu import Connection
from nameko.dependency_providers import Config
from werkzeug.wrappers import Request, Response

from gateway.http import api, json_response, read_json
from gateway.openapi import build_spec
from gateway.schemas import SignUpV1
from kernel.errors import DomainError, ServiceUnavailable, Unauthorized
from kernel.nameko_adapters import TimedRpcProxy
from kernel.tracing import Tracing

_OPENAPI = build_spec()


class GatewayService:
    name = "gateway"

    accounts = TimedRpcProxy("accounts")
    tracing = Tracing()
    config = Config()

    # --- helpers ------------------------------------------------------------------------------

    def _identity(self, request: Request) -> dict[str, str]:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("a bearer API key is required")
        return self.accounts.authenticate(key.strip())

    # --- endpoints ----------------------------------------------------------------------------

    @api("POST", "/v1/signup")
    def sign_up(self, request: Request) -> Response:
        command = read_json(request, SignUpV1())
        return json_response(201, self.accounts.sign_up(command))

    @api("GET", "/v1/tenant")
    def get_tenant(self, request: Request) -> Response:
        identity = self._identity(request)
        return json_response(200, self.accounts.get_tenant(identity["tenant_id"]))

    @api("GET", "/v1/openapi.json")
    def openapi(self, request: Request) -> Response:
        return json_response(200, _OPENAPI)

    @api("GET", "/healthz")
    def healthz(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    @api("GET", "/readyz")
    def readyz(self, request: Request) -> Response:
        checks: dict[str, Any] = {"broker": self._broker_reachable()}
        try:
            checks["accounts"] = self.accounts.health()["database"]
        except (DomainError, ServiceUnavailable):
            checks["accounts"] = False
        ready = all(checks.values())
        return json_response(
            200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks}
        )

    def _broker_reachable(self) -> bool:
        try:
            with Connection(self.config["AMQP_URI"], connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=1)
            return True
        except Exception:  # any failure to connect means "not ready", whatever its type
            return False
