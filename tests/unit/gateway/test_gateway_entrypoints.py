"""Gateway endpoints whose work is a thin mapping, each on a worker of its own (nameko's
``worker_factory``): the services it would call are stand-ins, so what is checked is only what
the endpoint itself adds. What the services do behind them is tested against real ones."""

from __future__ import annotations

import base64
import json

from nameko.testing.services import worker_factory
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway.route import ROUTE
from gateway.service import ROUTES, GatewayService
from kernel.config import DEV_AUDIT_SIGNING_KEY, Settings
from kernel.signed_note import parse_verifier_key
from kernel.signing import published_keys, signer_from_config
from tests.support.audit_keys import configured_keys

ORIGIN = "audit.ledgerdesk.test/unit"
AUDITOR = {
    "key_id": "5b0c5c7e-0000-4000-8000-000000000001",
    "agent_id": "5b0c5c7e-0000-4000-8000-000000000002",
    "tenant_id": "5b0c5c7e-0000-4000-8000-000000000003",
    "role": "auditor",
    "tenant_status": "active",
}


def get(path: str, key: str) -> Request:
    """The request as the gateway's handler passes it on: with the route it matched, whose
    declaration says who may call it."""
    headers = {"Authorization": f"Bearer {key}"}
    request = Request(EnvironBuilder(method="GET", path=path, headers=headers).get_environ())
    request.environ[ROUTE] = next(r for r in ROUTES if r.method == "get" and r.path == path)
    return request


def test_the_gateway_publishes_the_configured_keys_and_origin_keeping_the_old_fields():
    settings = Settings.from_env(
        {
            "LEDGERDESK_AUDIT_LOG_ORIGIN": ORIGIN,
            "LEDGERDESK_AUDIT_PUBLIC_KEYS": json.dumps(configured_keys(DEV_AUDIT_SIGNING_KEY)),
        }
    )
    # What the gateway's AuditKeys provider reads from the configuration at start.
    gateway = worker_factory(
        GatewayService, audit_keys=(settings.audit_origin, published_keys(settings))
    )
    gateway.credentials.authenticate.return_value = AUDITOR

    response = gateway.audit_public_key(get("/v1/audit/public-key", "ldk_auditors-key"))

    assert response.status_code == 200
    gateway.credentials.authenticate.assert_called_once_with("ldk_auditors-key")
    body = json.loads(response.get_data())
    signer = signer_from_config(settings.audit_signing_key)
    # The old fields: the key signing now, as clients before key lists read it.
    assert (body["algorithm"], body["public_key"], body["key_id"]) == (
        "Ed25519",
        signer.public_key_b64,
        signer.key_id,
    )
    assert body["origin"] == ORIGIN
    # The whole configured list, with the next key, which no seed could give.
    listed = [
        {k: key[k] for k in ("public_key", "valid_from", "valid_until")} for key in body["keys"]
    ]
    assert listed == configured_keys(settings.audit_signing_key)
    for key in body["keys"]:
        assert parse_verifier_key(key["verifier_key"]) == (
            ORIGIN,
            base64.b64decode(key["public_key"]),
        )
    assert body["verifier_key"] == body["keys"][0]["verifier_key"]
