"""Tenants cannot see each other, roles limit what a key may do, and a cancelled tenant's keys
can do nothing but look at the tenant, reactivate it and take its data out (access requests and
their exports, the whole tenant's export): over real HTTP, against the whole platform running as
processes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.route import Route
from gateway.service import ROUTES
from tests.e2e.conftest import Stack
from tests.e2e.helpers import (
    assert_problem,
    create_agent,
    create_contact,
    current_version,
    issue_key,
    sign_up,
    unique,
)

ROLES = ("admin", "agent", "auditor")
BEARER = tuple(e for e in ROUTES if e.auth == "bearer")
# What a cancelled tenant's keys may still do.
WHILE_CANCELLED = {("get", "/v1/tenant"), ("post", "/v1/tenant/reactivate")}
# Taking its data out during the grace: these answer as for an active tenant, here to a request
# with an empty body or an id it does not have (tests/e2e/test_gateway_privacy.py files real
# access requests and downloads their exports).
EXPORT_WHILE_CANCELLED = {
    ("post", "/v1/privacy/requests"): 422,
    ("get", "/v1/privacy/requests"): 200,
    ("post", "/v1/privacy/requests/{request_id}/approve"): 422,
    ("post", "/v1/privacy/requests/{request_id}/deny"): 422,
    ("get", "/v1/privacy/requests/{request_id}"): 404,
    ("get", "/v1/privacy/requests/{request_id}/export"): 404,
    # The tenant's whole export (tests/e2e/test_tenant_export.py downloads one while
    # cancelled), and the key its manifest is checked with.
    ("post", "/v1/tenant/exports"): 202,
    ("get", "/v1/tenant/exports"): 200,
    ("get", "/v1/tenant/exports/{export_id}"): 404,
    ("get", "/v1/tenant/exports/{export_id}/archive"): 404,
    ("get", "/v1/audit/public-key"): 200,
}
# Breach notices: during the grace the tenant's data is still held, so a breach of it is still
# its admins' to read and acknowledge (tests/e2e/test_incidents.py has real ones).
NOTICES_WHILE_CANCELLED = {
    ("get", "/v1/incidents"): 200,
    ("get", "/v1/incidents/{incident_id}"): 404,
    ("post", "/v1/incidents/{incident_id}/acknowledgements"): 404,
}
# Endpoints that change the whole tenant: the role matrix gives each case a tenant of its own.
# Endpoints that change the tenant or end the calling key run on a tenant of their own.
TENANT_WIDE = {
    ("delete", "/v1/tenant"),
    ("post", "/v1/tenant/reactivate"),
    ("post", "/v1/me/api-keys"),
}


# --- helpers ----------------------------------------------------------------------------------


def endpoint_id(endpoint: Route) -> str:
    return f"{endpoint.method.upper()} {endpoint.path}"


@dataclass
class Tenant:
    """A tenant with a key of every role and a contact."""

    id: str
    keys: dict[str, str]  # role -> API key
    agent_ids: dict[str, str]  # role -> agent id
    contact_id: str

    @property
    def admin_key(self) -> str:
        return self.keys["admin"]


def new_tenant(stack: Stack) -> Tenant:
    signed = sign_up(stack, company=unique("Tenant"))
    keys, ids = {"admin": signed["api_key"]}, {"admin": signed["agent"]["id"]}
    for role in ("agent", "auditor"):
        agent = create_agent(stack, signed["api_key"], role)
        keys[role], ids[role] = agent["api_key"], agent["id"]
    contact = create_contact(stack, signed["api_key"])
    return Tenant(signed["tenant"]["id"], keys, ids, contact["id"])


def request_for(stack: Stack, endpoint: Route, tenant: Tenant) -> tuple[str, dict, bool]:
    """A well-formed request for ``endpoint`` on ``tenant``'s own resources.

    Returns the path, the request's keyword arguments and whether the recipe is complete (an
    allowed caller should then get the endpoint's success status). Endpoints this module does
    not know yet get random ids and an empty body: enough to check roles, not success.
    """
    known = True
    values: dict[str, str] = {}
    victim: dict[str, Any] | None = None
    for name in endpoint.path_params:
        if name == "agent_id":
            victim = victim or create_agent(stack, tenant.admin_key)
            values[name] = victim["id"]
        elif name == "key_id":
            victim = victim or create_agent(stack, tenant.admin_key)
            values[name] = issue_key(stack, tenant.admin_key, victim["id"])["id"]
        elif name == "contact_id":
            values[name] = tenant.contact_id
        else:
            values[name], known = str(uuid.uuid4()), False
    path = endpoint.path.format(**values)

    kwargs: dict[str, Any] = {}
    bodies = {
        "/v1/agents": {
            "name": unique("New"),
            "email": f"{unique('new')}@example.com",
            "role": "agent",
        },
        "/v1/contacts": {"name": unique("New"), "email": f"{unique('new')}@example.com"},
        "/v1/contacts/{contact_id}": {"name": unique("Renamed")},
        "/v1/contacts/{contact_id}/consent": {"marketing": True, "source": "role-matrix"},
        "/v1/policies/accept": {"version": current_version(stack)},
    }
    if endpoint.body:
        if endpoint.path in bodies:
            kwargs["json"] = bodies[endpoint.path]
        else:
            kwargs["json"], known = {}, False
    if endpoint.if_match:
        current = stack.call("GET", path, key=tenant.admin_key)
        kwargs["headers"] = {"If-Match": current.headers.get("ETag", '"1"')}
    # A query an endpoint requires.
    queries = {"/v1/search": {"q": "role matrix"}}
    if endpoint.path in queries:
        kwargs["params"] = queries[endpoint.path]
    return path, kwargs, known


# --- (a) isolation ----------------------------------------------------------------------------


@pytest.fixture
def two_tenants(stack):
    """Tenant A with an extra agent, a second key of it and a contact; tenant B, an admin."""
    a = sign_up(stack, company=unique("Tenant A"))
    b = sign_up(stack, company=unique("Tenant B"))
    agent = create_agent(stack, a["api_key"])
    key = issue_key(stack, a["api_key"], agent["id"])
    contact = create_contact(stack, a["api_key"])
    return {
        "a_key": a["api_key"],
        "b_key": b["api_key"],
        "agent": agent,
        "key": key,
        "contact": contact,
    }


ISOLATION = [
    ("GET", "/v1/agents/{agent_id}", None),
    ("DELETE", "/v1/agents/{agent_id}", None),
    ("POST", "/v1/agents/{agent_id}/api-keys", None),
    ("DELETE", "/v1/agents/{agent_id}/api-keys/{key_id}", None),
    ("GET", "/v1/contacts/{contact_id}", None),
    ("PATCH", "/v1/contacts/{contact_id}", {"name": "Hijacked Name"}),
    ("GET", "/v1/contacts/{contact_id}/consent", None),
    ("PUT", "/v1/contacts/{contact_id}/consent", {"marketing": True, "source": "hijack"}),
]


@pytest.mark.parametrize(
    "method, template, body", ISOLATION, ids=[f"{m} {t}" for m, t, _ in ISOLATION]
)
def test_another_tenants_resource_is_indistinguishable_from_an_absent_one(
    stack, two_tenants, method, template, body
):
    t = two_tenants
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    if method == "PATCH":
        kwargs["headers"] = {"If-Match": '"1"'}
    theirs = template.format(
        agent_id=t["agent"]["id"], key_id=t["key"]["id"], contact_id=t["contact"]["id"]
    )
    absent = template.format(agent_id=uuid.uuid4(), key_id=uuid.uuid4(), contact_id=uuid.uuid4())

    cross = stack.call(method, theirs, key=t["b_key"], **kwargs)
    missing = stack.call(method, absent, key=t["b_key"], **kwargs)
    assert assert_problem(cross, 404) == assert_problem(missing, 404)

    # Tenant A's data is untouched.
    a_key = t["a_key"]
    agent = stack.call("GET", f"/v1/agents/{t['agent']['id']}", key=a_key)
    assert agent.status_code == 200 and agent.json()["active"] is True
    for key in (t["agent"]["api_key"], t["key"]["api_key"]):
        assert stack.call("GET", "/v1/contacts", key=key).status_code == 200
    contact = stack.call("GET", f"/v1/contacts/{t['contact']['id']}", key=a_key)
    assert contact.json() == t["contact"] and contact.headers["ETag"] == '"1"'
    consent = stack.call("GET", f"/v1/contacts/{t['contact']['id']}/consent", key=a_key)
    assert consent.json()["history"] == []


def test_lists_never_show_another_tenants_rows(stack):
    tenants = [new_tenant(stack), new_tenant(stack)]
    for tenant in tenants:
        create_contact(stack, tenant.keys["agent"])

    def ids(tenant: Tenant, path: str) -> set[str]:
        response = stack.call("GET", path, key=tenant.admin_key, params={"limit": 200})
        assert response.status_code == 200, response.text
        body = response.json()
        assert "next_cursor" not in body or body["next_cursor"] is None
        return {item["id"] for item in body["items"]}

    agents = [ids(t, "/v1/agents") for t in tenants]
    contacts = [ids(t, "/v1/contacts") for t in tenants]
    pending = [ids(t, "/v1/policies/pending-acceptance") for t in tenants]
    for mine, tenant in enumerate(tenants):
        assert agents[mine] == set(tenant.agent_ids.values())
        assert len(contacts[mine]) == 2 and tenant.contact_id in contacts[mine]
        # The admin accepted at signup; the two agents created after it have not.
        assert pending[mine] == {tenant.agent_ids["agent"], tenant.agent_ids["auditor"]}
    assert not agents[0] & agents[1]
    assert not contacts[0] & contacts[1]
    assert not pending[0] & pending[1]


# --- (b) roles --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def roles_tenant(stack) -> Tenant:
    """Shared by the matrix's cases that change nothing but what they create themselves."""
    return new_tenant(stack)


def test_every_bearer_endpoint_declares_its_roles():
    assert BEARER, "no bearer endpoints"
    for endpoint in BEARER:
        assert endpoint.roles and set(endpoint.roles) <= set(ROLES), endpoint_id(endpoint)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", BEARER, ids=endpoint_id)
def test_role_matrix(stack, roles_tenant, endpoint, role):
    tenant = roles_tenant
    if (endpoint.method, endpoint.path) in TENANT_WIDE:
        tenant = new_tenant(stack)
        if endpoint.path == "/v1/tenant/reactivate":
            assert stack.call("DELETE", "/v1/tenant", key=tenant.admin_key).status_code == 202
    path, kwargs, known = request_for(stack, endpoint, tenant)

    response = stack.call(endpoint.method.upper(), path, key=tenant.keys[role], **kwargs)

    if role in endpoint.roles:
        assert response.status_code not in (401, 403), response.text
        if known:
            assert response.status_code == int(endpoint.status), response.text
    else:
        assert_problem(response, 403)


# --- (c) a cancelled tenant -------------------------------------------------------------------


@pytest.fixture(scope="module")
def cancelled_tenant(stack) -> Tenant:
    tenant = new_tenant(stack)
    response = stack.call("DELETE", "/v1/tenant", key=tenant.admin_key)
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    return tenant


@pytest.mark.parametrize(
    "endpoint",
    [e for e in BEARER if (e.method, e.path) != ("post", "/v1/tenant/reactivate")],
    ids=endpoint_id,
)
def test_a_cancelled_tenants_admin_key_is_refused(stack, cancelled_tenant, endpoint):
    # The recipe's setup requests run as the cancelled admin too; build the paths by hand.
    tenant = cancelled_tenant
    values = {
        "agent_id": tenant.agent_ids["agent"],
        "contact_id": tenant.contact_id,
        "key_id": str(uuid.uuid4()),
    }
    path = endpoint.path.format(
        **{name: values.get(name, str(uuid.uuid4())) for name in endpoint.path_params}
    )
    kwargs: dict[str, Any] = {}
    if endpoint.body:
        kwargs["json"] = {}
    if endpoint.if_match:
        kwargs["headers"] = {"If-Match": '"1"'}

    response = stack.call(endpoint.method.upper(), path, key=tenant.admin_key, **kwargs)

    if (endpoint.method, endpoint.path) in WHILE_CANCELLED:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
    elif (endpoint.method, endpoint.path) in EXPORT_WHILE_CANCELLED | NOTICES_WHILE_CANCELLED:
        expected = (EXPORT_WHILE_CANCELLED | NOTICES_WHILE_CANCELLED)[
            (endpoint.method, endpoint.path)
        ]
        assert response.status_code == expected, response.text
    else:
        assert_problem(response, 403)


def test_reactivation_makes_the_keys_work_again(stack):
    tenant = new_tenant(stack)
    assert stack.call("DELETE", "/v1/tenant", key=tenant.admin_key).status_code == 202
    for role in ROLES:
        assert stack.call("GET", "/v1/tenant", key=tenant.keys[role]).status_code == 200
    assert_problem(stack.call("GET", "/v1/contacts", key=tenant.keys["agent"]), 403)
    assert_problem(stack.call("GET", "/v1/agents", key=tenant.admin_key), 403)
    # Reactivation is the admin's alone, even while cancelled.
    assert_problem(stack.call("POST", "/v1/tenant/reactivate", key=tenant.keys["agent"]), 403)

    reactivated = stack.call("POST", "/v1/tenant/reactivate", key=tenant.admin_key)
    assert reactivated.status_code == 200, reactivated.text
    assert reactivated.json()["status"] == "active"

    assert stack.call("GET", "/v1/contacts", key=tenant.keys["agent"]).status_code == 200
    assert stack.call("GET", "/v1/agents", key=tenant.admin_key).status_code == 200
    create_agent(stack, tenant.admin_key)
    create_contact(stack, tenant.keys["agent"])
