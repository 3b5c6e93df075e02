"""The OpenAPI 3 document of the API, generated from the same schemas the gateway validates with."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from gateway import schemas

_ERRORS = {
    "400": "malformed JSON",
    "401": "no or bad credentials",
    "403": "role not allowed",
    "404": "not found (also: another tenant's)",
    "413": "body too large",
    "422": "validation failed",
    "503": "a dependency is unavailable",
}


def _responses(ok: tuple[str, str, str | None], *errors: str) -> dict[str, Any]:
    status, description, schema = ok
    responses: dict[str, Any] = {status: {"description": description}}
    if schema:
        responses[status]["content"] = {"application/json": {"schema": schema}}
    for code in errors:
        responses[code] = {
            "description": _ERRORS[code],
            "content": {"application/problem+json": {"schema": "Problem"}},
        }
    return responses


def build_spec() -> dict[str, Any]:
    spec = APISpec(
        title="Ledgerdesk API",
        version="1",
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": "A multi-tenant helpdesk whose privacy promises are kept by code."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name in ("SignUpV1", "TenantOut", "SignUpOut", "Problem"):
        spec.components.schema(name, schema=getattr(schemas, name))
    spec.path(
        path="/v1/signup",
        operations={
            "post": {
                "summary": "Sign up a tenant with its first admin",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": "SignUpV1"}},
                },
                "responses": _responses(
                    ("201", "the tenant, its admin and the admin's API key", "SignUpOut"),
                    "400",
                    "413",
                    "422",
                    "503",
                ),
            }
        },
    )
    spec.path(
        path="/v1/tenant",
        operations={
            "get": {
                "summary": "The caller's tenant",
                "security": [{"bearer": []}],
                "responses": _responses(("200", "the tenant", "TenantOut"), "401", "503"),
            }
        },
    )
    spec.path(
        path="/healthz",
        operations={
            "get": {"summary": "The process is up", "responses": {"200": {"description": "up"}}}
        },
    )
    spec.path(
        path="/readyz",
        operations={
            "get": {
                "summary": "The broker and the services' databases are reachable",
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
    )
    spec.path(
        path="/v1/openapi.json",
        operations={
            "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}
        },
    )
    return spec.to_dict()
