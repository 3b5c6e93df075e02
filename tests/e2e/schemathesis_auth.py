"""Credentials for the schemathesis run of ``test_openapi_conformance`` (loaded by the CLI as its
hooks module, ``SCHEMATHESIS_HOOKS``).

Generated requests may end the very credentials they are sent with: claiming a key of one's own
(``POST /v1/me/api-keys``) revokes the calling key, cancelling the tenant refuses it everything
but reactivation. Every operation after that would answer 401 or 403 and be tested no further.
So a refused key is replaced: schemathesis asks ``get`` again on a 401 or 403 and replays the
request once, and ``get`` signs up a tenant of its own. The operator's routes take the operator
token.
"""

from __future__ import annotations

import os

import requests
import schemathesis

URL = os.environ["LEDGERDESK_CONFORMANCE_URL"]
OPERATOR_TOKEN = os.environ["LEDGERDESK_CONFORMANCE_OPERATOR_TOKEN"]
SIGNUP = {
    "company": "Conformance Ltd",
    "region": "uk",
    "admin": {"name": "Ada Lovelace", "email": "ada@example.com"},
    "age_confirmed": True,
    "accept_policy_version": "2026-01",
}


def is_operator(path: str) -> bool:
    return "/operator/" in path or path == "/metrics"


@schemathesis.auth(retry_on=[401, 403])
class TenantAdmin:
    def get(self, case, context) -> str:
        # The operator may have published a policy version meanwhile (the run does too).
        current = requests.get(f"{URL}/v1/policies/current", timeout=30)
        current.raise_for_status()
        body = {**SIGNUP, "accept_policy_version": current.json()["version"]}
        response = requests.post(f"{URL}/v1/signup", json=body, timeout=30)
        response.raise_for_status()
        return response.json()["api_key"]

    def set(self, case, data: str, context) -> None:
        token = OPERATOR_TOKEN if is_operator(case.path) else data
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
