"""The accounts API over real HTTP: every endpoint's success path, idempotency, concurrency and
the error answers, against the whole platform running as processes.

Each test makes its own tenants. Policy versions are platform-wide and some tests here publish
new ones, so every signup accepts whatever version is current at the time.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import SIGNUP, Stack
from tests.e2e.helpers import (
    assert_problem,
    create_agent,
    create_contact,
    current_version,
    post_contact,
    rows,
    sign_up,
    unique,
)

MIB = 1 << 20


# --- helpers ----------------------------------------------------------------------------------


def all_pages(stack: Stack, key: str, path: str, limit: int) -> list[list[dict[str, Any]]]:
    """Every page of a list, following next_cursor until it is null."""
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        response = stack.call("GET", path, key=key, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= limit
        pages.append(body["items"])
        if body["next_cursor"] is None:
            return pages
        assert isinstance(body["next_cursor"], str) and body["next_cursor"]
        assert len(pages) < 100, "the cursor never ran out"
        params = {"limit": limit, "cursor": body["next_cursor"]}


def parse_time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value} has no zone"
    return parsed


def publish(stack: Stack, version: str):
    return stack.call(
        "POST",
        "/v1/operator/policies",
        key=stack.settings.operator_token,
        json={"version": version},
    )


# --- tenants ----------------------------------------------------------------------------------


def test_signup_answers_with_the_tenant_its_admin_and_a_working_key(stack):
    company = unique("Signup Co")
    response = stack.call(
        "POST",
        "/v1/signup",
        json={
            **SIGNUP,
            "company": company,
            "region": "sg",
            "admin": {"name": "Grace Hopper", "email": "grace@example.com"},
            "accept_policy_version": current_version(stack),
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["Content-Type"] == "application/json"
    created = response.json()
    assert created == {
        "tenant": {
            "id": created["tenant"]["id"],
            "company": company,
            "region": "sg",
            "status": "active",
            "plan": "standard",
        },
        "agent": {
            "id": created["agent"]["id"],
            "name": "Grace Hopper",
            "email": "grace@example.com",
            "role": "admin",
            "active": True,
        },
        "api_key": created["api_key"],
    }
    uuid.UUID(created["tenant"]["id"])
    uuid.UUID(created["agent"]["id"])
    assert isinstance(created["api_key"], str) and len(created["api_key"]) >= 40

    me = stack.call("GET", "/v1/tenant", key=created["api_key"])
    tenant_id = created["tenant"]["id"]
    # Its support address names the tenant by id only (docs/architecture.md, "Mail in").
    assert me.status_code == 200 and me.json() == {
        **created["tenant"],
        "support_address": f"{tenant_id}@{stack.settings.mail_in_domain}",
    }


def test_cancel_then_reactivate_the_tenant(stack):
    tenant = sign_up(stack)
    key = tenant["api_key"]

    before = dt.datetime.now(dt.UTC)
    cancelled = stack.call("DELETE", "/v1/tenant", key=key)
    after = dt.datetime.now(dt.UTC)
    assert cancelled.status_code == 202, cancelled.text
    body = cancelled.json()
    assert body == {
        **tenant["tenant"],
        "status": "cancelled",
        "destroy_after": body["destroy_after"],
    }
    destroy_after = parse_time(body["destroy_after"])
    grace = dt.timedelta(days=21)
    assert before + grace - dt.timedelta(seconds=5) <= destroy_after
    assert destroy_after <= after + grace + dt.timedelta(seconds=5)

    # GET /v1/tenant also shows the tenant's support address (docs/architecture.md, "Mail in").
    support = {"support_address": f"{tenant['tenant']['id']}@{stack.settings.mail_in_domain}"}
    seen = stack.call("GET", "/v1/tenant", key=key)
    assert seen.status_code == 200 and seen.json() == {**body, **support}

    reactivated = stack.call("POST", "/v1/tenant/reactivate", key=key)
    assert reactivated.status_code == 200, reactivated.text
    assert reactivated.json() == tenant["tenant"]  # active again, no destroy_after
    assert stack.call("GET", "/v1/tenant", key=key).json() == {**tenant["tenant"], **support}

    # Reactivating an active tenant is a state conflict.
    assert_problem(stack.call("POST", "/v1/tenant/reactivate", key=key), 409)


# --- agents and keys --------------------------------------------------------------------------


def test_create_an_agent_whose_key_works_at_once_and_get_it(stack):
    admin_key = sign_up(stack)["api_key"]
    email = f"{unique('lin')}@example.com"
    response = stack.call(
        "POST",
        "/v1/agents",
        key=admin_key,
        json={"name": "Lin Support", "email": email, "role": "agent"},
    )
    assert response.status_code == 201, response.text
    agent = response.json()
    assert agent == {
        "id": agent["id"],
        "name": "Lin Support",
        "email": email,
        "role": "agent",
        "active": True,
        "api_key": agent["api_key"],
    }
    assert isinstance(agent["api_key"], str) and len(agent["api_key"]) >= 40

    # The new key works on the very next request.
    assert stack.call("GET", "/v1/contacts", key=agent["api_key"]).status_code == 200

    got = stack.call("GET", f"/v1/agents/{agent['id']}", key=admin_key)
    assert got.status_code == 200
    assert got.json() == {k: v for k, v in agent.items() if k != "api_key"}


def test_list_agents_page_by_page_sees_each_agent_exactly_once(stack):
    signed = sign_up(stack)
    admin_key = signed["api_key"]
    created = [create_agent(stack, admin_key, role=r)["id"] for r in ("agent",) * 4 + ("auditor",)]
    expected = {signed["agent"]["id"], *created}

    pages = all_pages(stack, admin_key, "/v1/agents", limit=2)
    assert [len(page) for page in pages] == [2, 2, 2]
    seen = [item["id"] for page in pages for item in page]
    assert len(seen) == len(set(seen)), "an agent was listed twice"
    assert set(seen) == expected
    for item in (item for page in pages for item in page):
        assert set(item) == {"id", "name", "email", "role", "active"}

    # Without a limit: one page of all of them, in the same order.
    whole = stack.call("GET", "/v1/agents", key=admin_key).json()
    assert whole["next_cursor"] is None and [i["id"] for i in whole["items"]] == seen


def test_deactivating_an_agent_stops_its_key_at_once_but_not_the_admin_itself(stack):
    signed = sign_up(stack)
    admin_key = signed["api_key"]
    agent = create_agent(stack, admin_key)
    assert stack.call("GET", "/v1/tenant", key=agent["api_key"]).status_code == 200

    response = stack.call("DELETE", f"/v1/agents/{agent['id']}", key=admin_key)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": agent["id"],
        "name": agent["name"],
        "email": agent["email"],
        "role": "agent",
        "active": False,
    }
    assert_problem(stack.call("GET", "/v1/tenant", key=agent["api_key"]), 401)
    assert stack.call("GET", f"/v1/agents/{agent['id']}", key=admin_key).json()["active"] is False
    # Deactivating twice is a state conflict.
    assert_problem(stack.call("DELETE", f"/v1/agents/{agent['id']}", key=admin_key), 409)

    own = stack.call("DELETE", f"/v1/agents/{signed['agent']['id']}", key=admin_key)
    assert_problem(own, 409)
    assert stack.call("GET", "/v1/tenant", key=admin_key).status_code == 200


def test_issue_and_revoke_api_keys(stack):
    admin_key = sign_up(stack)["api_key"]
    agent = create_agent(stack, admin_key)

    issued = stack.call("POST", f"/v1/agents/{agent['id']}/api-keys", key=admin_key)
    assert issued.status_code == 201, issued.text
    key = issued.json()
    assert key == {"id": key["id"], "agent_id": agent["id"], "api_key": key["api_key"]}
    uuid.UUID(key["id"])
    assert key["api_key"] != agent["api_key"]
    assert stack.call("GET", "/v1/contacts", key=key["api_key"]).status_code == 200

    revoked = stack.call("DELETE", f"/v1/agents/{agent['id']}/api-keys/{key['id']}", key=admin_key)
    assert revoked.status_code == 204, revoked.text
    assert revoked.content == b""
    assert_problem(stack.call("GET", "/v1/contacts", key=key["api_key"]), 401)
    # The agent's first key is untouched.
    assert stack.call("GET", "/v1/contacts", key=agent["api_key"]).status_code == 200
    # A revoked key cannot be revoked again.
    again = stack.call("DELETE", f"/v1/agents/{agent['id']}/api-keys/{key['id']}", key=admin_key)
    assert_problem(again, 404)


# --- contacts and consent ---------------------------------------------------------------------


def test_create_get_and_list_contacts(stack):
    key = sign_up(stack)["api_key"]
    email = f"{unique('dee')}@example.com"
    response = stack.call(
        "POST",
        "/v1/contacts",
        key=key,
        json={"name": "Dee Customer", "email": email, "phone": "+44 20 7946 0001"},
    )
    assert response.status_code == 201, response.text
    contact = response.json()
    assert contact == {
        "id": contact["id"],
        "name": "Dee Customer",
        "email": email,
        "phone": "+44 20 7946 0001",
        "marketing": False,
        "version": 1,
    }
    assert response.headers["ETag"] == '"1"'

    got = stack.call("GET", f"/v1/contacts/{contact['id']}", key=key)
    assert got.status_code == 200 and got.json() == contact
    assert got.headers["ETag"] == '"1"'

    without_phone = create_contact(stack, key)
    assert without_phone["phone"] is None
    third = create_contact(stack, key)

    pages = all_pages(stack, key, "/v1/contacts", limit=2)
    assert [len(page) for page in pages] == [2, 1]
    listed = [item for page in pages for item in page]
    assert [item["id"] for item in listed] == [contact["id"], without_phone["id"], third["id"]]
    # A listed contact also says when it last changed (what ?updated_since= compares).
    assert {k: v for k, v in listed[0].items() if k != "updated_at"} == contact
    assert listed[0]["updated_at"].endswith("+00:00")


def test_patch_a_contact_with_if_match(stack):
    key = sign_up(stack)["api_key"]
    created = post_contact(stack, key, phone="+1 555 0100")
    contact, etag = created.json(), created.headers["ETag"]

    patched = stack.call(
        "PATCH",
        f"/v1/contacts/{contact['id']}",
        key=key,
        json={"name": "Winner Name", "phone": None},
        headers={"If-Match": etag},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json() == {**contact, "name": "Winner Name", "phone": None, "version": 2}
    assert patched.headers["ETag"] == '"2"'

    stale = stack.call(
        "PATCH",
        f"/v1/contacts/{contact['id']}",
        key=key,
        json={"name": "Loser Name"},
        headers={"If-Match": etag},
    )
    assert_problem(stale, 409)

    missing = stack.call(
        "PATCH", f"/v1/contacts/{contact['id']}", key=key, json={"name": "Careless Name"}
    )
    assert_problem(missing, 428)

    # Nothing lost, nothing overwritten: the data is the first writer's.
    now = stack.call("GET", f"/v1/contacts/{contact['id']}", key=key)
    assert now.json()["name"] == "Winner Name" and now.json()["phone"] is None
    assert now.headers["ETag"] == '"2"'


@pytest.mark.parametrize("round_", range(3))
def test_two_concurrent_patches_with_one_if_match_one_wins(stack, round_):
    key = sign_up(stack)["api_key"]
    created = post_contact(stack, key)
    contact_id, etag = created.json()["id"], created.headers["ETag"]

    start = threading.Barrier(2)
    answers: dict[str, Any] = {}

    def patch(name: str) -> None:
        start.wait()
        answers[name] = stack.call(
            "PATCH",
            f"/v1/contacts/{contact_id}",
            key=key,
            json={"name": name},
            headers={"If-Match": etag},
        )

    threads = [threading.Thread(target=patch, args=(n,)) for n in ("Writer One", "Writer Two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 2, "a request did not finish"

    statuses = sorted(r.status_code for r in answers.values())
    assert statuses == [200, 409], {n: (r.status_code, r.text) for n, r in answers.items()}
    [winner] = [name for name, r in answers.items() if r.status_code == 200]
    [loser] = [r for r in answers.values() if r.status_code == 409]
    assert_problem(loser, 409)

    now = stack.call("GET", f"/v1/contacts/{contact_id}", key=key)
    assert now.json()["name"] == winner and now.json()["version"] == 2
    assert now.headers["ETag"] == '"2"'


def test_consent_keeps_its_whole_history_in_order(stack):
    key = sign_up(stack)["api_key"]
    contact = create_contact(stack, key)
    version = current_version(stack)

    empty = stack.call("GET", f"/v1/contacts/{contact['id']}/consent", key=key)
    assert empty.status_code == 200
    assert empty.json() == {"contact_id": contact["id"], "marketing": False, "history": []}

    opted_in = stack.call(
        "PUT",
        f"/v1/contacts/{contact['id']}/consent",
        key=key,
        json={"marketing": True, "source": "web-form"},
    )
    assert opted_in.status_code == 200, opted_in.text
    first = opted_in.json()
    assert first == {
        "contact_id": contact["id"],
        "marketing": True,
        "source": "web-form",
        "policy_version": version,
        "recorded_at": first["recorded_at"],
    }
    assert stack.call("GET", f"/v1/contacts/{contact['id']}", key=key).json()["marketing"] is True

    opted_out = stack.call(
        "PUT",
        f"/v1/contacts/{contact['id']}/consent",
        key=key,
        json={"marketing": False, "source": "unsubscribe-link"},
    )
    assert opted_out.status_code == 200, opted_out.text
    second = opted_out.json()

    state = stack.call("GET", f"/v1/contacts/{contact['id']}/consent", key=key)
    assert state.status_code == 200
    assert state.json() == {
        "contact_id": contact["id"],
        "marketing": False,
        "history": [
            {k: first[k] for k in ("marketing", "source", "policy_version", "recorded_at")},
            {k: second[k] for k in ("marketing", "source", "policy_version", "recorded_at")},
        ],
    }
    assert parse_time(first["recorded_at"]) <= parse_time(second["recorded_at"])
    assert stack.call("GET", f"/v1/contacts/{contact['id']}", key=key).json()["marketing"] is False


# --- policies ---------------------------------------------------------------------------------


def test_the_current_policy_needs_no_key(stack):
    response = stack.call("GET", "/v1/policies/current")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"version", "published_at"}
    assert isinstance(body["version"], str) and body["version"]
    parse_time(body["published_at"])


def test_publishing_a_policy_takes_the_operator_token_and_a_new_version(stack):
    version = unique("2026-op")
    missing = stack.call("POST", "/v1/operator/policies", json={"version": version})
    assert_problem(missing, 401)
    wrong = stack.call(
        "POST", "/v1/operator/policies", key="not-the-operator-token", json={"version": version}
    )
    assert_problem(wrong, 401)
    tenant_key = sign_up(stack)["api_key"]
    as_admin = stack.call(
        "POST", "/v1/operator/policies", key=tenant_key, json={"version": version}
    )
    assert_problem(as_admin, 401)
    assert current_version(stack) != version

    assert_problem(publish(stack, "not a version!"), 422)

    published = publish(stack, version)
    assert published.status_code == 201, published.text
    body = published.json()
    assert body == {"version": version, "published_at": body["published_at"]}
    parse_time(body["published_at"])
    assert stack.call("GET", "/v1/policies/current").json() == body

    assert_problem(publish(stack, version), 409)


def test_agents_who_have_not_accepted_the_new_version_are_pending_until_they_do(stack):
    signed = sign_up(stack)
    admin_key, admin = signed["api_key"], signed["agent"]
    old_version = current_version(stack)
    agent = create_agent(stack, admin_key, role="agent")
    auditor = create_agent(stack, admin_key, role="auditor")

    def pending() -> dict[str, Any]:
        response = stack.call("GET", "/v1/policies/pending-acceptance", key=admin_key)
        assert response.status_code == 200, response.text
        return response.json()

    def entry(a: dict[str, Any]) -> dict[str, Any]:
        return {"id": a["id"], "name": a["name"], "email": a["email"], "role": a["role"]}

    # The admin accepted at signup; the agents created since have not.
    assert pending() == {"version": old_version, "items": [entry(agent), entry(auditor)]}

    new_version = unique("2026-new")
    assert publish(stack, new_version).status_code == 201
    assert pending() == {
        "version": new_version,
        "items": [entry(admin), entry(agent), entry(auditor)],
    }

    # Only the current version can be accepted.
    stale = stack.call(
        "POST", "/v1/policies/accept", key=agent["api_key"], json={"version": old_version}
    )
    assert_problem(stale, 409)
    unknown = stack.call(
        "POST", "/v1/policies/accept", key=agent["api_key"], json={"version": "1999-01"}
    )
    assert_problem(unknown, 409)

    accepted = stack.call(
        "POST", "/v1/policies/accept", key=agent["api_key"], json={"version": new_version}
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"version": new_version, "agent_id": agent["id"], "accepted": True}
    assert pending()["items"] == [entry(admin), entry(auditor)]

    assert (
        stack.call(
            "POST", "/v1/policies/accept", key=admin_key, json={"version": new_version}
        ).status_code
        == 200
    )
    assert pending()["items"] == [entry(auditor)]

    # Accepting twice is harmless.
    again = stack.call(
        "POST", "/v1/policies/accept", key=agent["api_key"], json={"version": new_version}
    )
    assert again.status_code == 200 and again.json()["accepted"] is True
    assert pending()["items"] == [entry(auditor)]

    # A new tenant must accept the current version, not the one before it.
    refused = stack.call(
        "POST",
        "/v1/signup",
        json={**SIGNUP, "company": unique("Late Co"), "accept_policy_version": old_version},
    )
    body = assert_problem(refused, 422)
    assert set(body["errors"]) == {"accept_policy_version"}
    assert sign_up(stack)["tenant"]["status"] == "active"


# --- idempotency ------------------------------------------------------------------------------


def tenants_named(stack: Stack, company: str) -> int:
    return rows(stack, "accounts", "SELECT count(*) FROM tenants WHERE company = %s", company)[0][0]


def test_a_repeated_signup_with_its_idempotency_key_replays_without_the_key(stack):
    company = unique("Idempotent Co")
    body = {**SIGNUP, "company": company, "accept_policy_version": current_version(stack)}
    headers = {"Idempotency-Key": unique("signup")}

    first = stack.call("POST", "/v1/signup", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    replay = stack.call("POST", "/v1/signup", json=body, headers=headers)
    assert replay.status_code == 201, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Content-Type"] == "application/json"
    assert replay.json() == {**first.json(), "api_key": None}

    assert tenants_named(stack, company) == 1
    # The first answer's key is the one and only key, and it works.
    key = first.json()["api_key"]
    assert stack.call("GET", "/v1/tenant", key=key).json()["id"] == first.json()["tenant"]["id"]
    agents = stack.call("GET", "/v1/agents", key=key).json()["items"]
    assert [a["id"] for a in agents] == [first.json()["agent"]["id"]]

    changed = stack.call(
        "POST", "/v1/signup", json={**body, "company": unique("Other Co")}, headers=headers
    )
    problem = assert_problem(changed, 409)
    assert "Idempotency-Key" in problem["detail"]
    assert tenants_named(stack, company) == 1


def test_a_repeated_agent_creation_with_its_idempotency_key_creates_one_agent(stack):
    admin_key = sign_up(stack)["api_key"]
    email = f"{unique('once')}@example.com"
    body = {"name": "Only Once", "email": email, "role": "agent"}
    headers = {"Idempotency-Key": unique("agent")}

    first = stack.call("POST", "/v1/agents", key=admin_key, json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    replay = stack.call("POST", "/v1/agents", key=admin_key, json=body, headers=headers)
    assert replay.status_code == 201, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == {**first.json(), "api_key": None}

    listed = stack.call("GET", "/v1/agents", key=admin_key).json()["items"]
    assert [a["id"] for a in listed if a["email"] == email] == [first.json()["id"]]
    assert stack.call("GET", "/v1/contacts", key=first.json()["api_key"]).status_code == 200

    other = stack.call(
        "POST",
        "/v1/agents",
        key=admin_key,
        json={**body, "name": "Someone Else"},
        headers=headers,
    )
    assert "Idempotency-Key" in assert_problem(other, 409)["detail"]
    listed = stack.call("GET", "/v1/agents", key=admin_key).json()["items"]
    assert len(listed) == 2  # the admin and the one agent


def test_a_replayed_contact_creation_carries_its_etag(stack):
    key = sign_up(stack)["api_key"]
    body = {"name": "Replayed Contact", "email": "replayed@example.com"}
    headers = {"Idempotency-Key": unique("contact")}
    first = stack.call("POST", "/v1/contacts", key=key, json=body, headers=headers)
    replay = stack.call("POST", "/v1/contacts", key=key, json=body, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.json() == first.json()
    assert [c["id"] for c in stack.call("GET", "/v1/contacts", key=key).json()["items"]] == [
        first.json()["id"]
    ]
    assert replay.headers.get("ETag") == first.headers["ETag"]


# --- errors -----------------------------------------------------------------------------------


def _random() -> str:
    return str(uuid.uuid4())


ERROR_CASES: list[dict[str, Any]] = [
    # 400
    dict(
        id="malformed-json-signup",
        method="POST",
        path="/v1/signup",
        auth=False,
        kwargs=dict(data=b'{"company": ', headers={"Content-Type": "application/json"}),
        status=400,
    ),
    dict(
        id="malformed-json-contact",
        method="POST",
        path="/v1/contacts",
        kwargs=dict(data=b"{nope", headers={"Content-Type": "application/json"}),
        status=400,
    ),
    # 401
    dict(id="no-key", method="GET", path="/v1/agents", auth=False, status=401),
    dict(
        id="bad-key",
        method="GET",
        path="/v1/agents",
        auth=False,
        kwargs=dict(headers={"Authorization": "Bearer ldk_" + "x" * 43}),
        status=401,
    ),
    dict(
        id="not-bearer",
        method="GET",
        path="/v1/tenant",
        auth=False,
        kwargs=dict(headers={"Authorization": "Basic dXNlcjpwYXNz"}),
        status=401,
    ),
    dict(
        id="empty-bearer",
        method="GET",
        path="/v1/tenant",
        auth=False,
        kwargs=dict(headers={"Authorization": "Bearer "}),
        status=401,
    ),
    # 413
    dict(
        id="too-large-contact",
        method="POST",
        path="/v1/contacts",
        kwargs=dict(
            data=b'{"name": "' + b"a" * MIB + b'"}', headers={"Content-Type": "application/json"}
        ),
        status=413,
    ),
    dict(
        id="too-large-signup",
        method="POST",
        path="/v1/signup",
        auth=False,
        kwargs=dict(data=b" " * (MIB + 1), headers={"Content-Type": "application/json"}),
        status=413,
    ),
    # 422
    dict(
        id="unknown-field",
        method="POST",
        path="/v1/signup",
        auth=False,
        kwargs=dict(json={**SIGNUP, "is_operator": True}),
        status=422,
        errors="is_operator",
    ),
    dict(
        id="age-confirmed-1",
        method="POST",
        path="/v1/signup",
        auth=False,
        kwargs=dict(json={**SIGNUP, "age_confirmed": 1}),
        status=422,
        errors="age_confirmed",
    ),
    dict(
        id="age-confirmed-string",
        method="POST",
        path="/v1/signup",
        auth=False,
        kwargs=dict(json={**SIGNUP, "age_confirmed": "true"}),
        status=422,
        errors="age_confirmed",
    ),
    dict(
        id="unknown-region",
        method="POST",
        path="/v1/signup",
        auth=False,
        kwargs=dict(json={**SIGNUP, "region": "mars"}),
        status=422,
        errors="region",
    ),
    dict(
        id="body-not-an-object",
        method="POST",
        path="/v1/contacts",
        kwargs=dict(json=["name"]),
        status=422,
        errors="_schema",
    ),
    dict(
        id="bad-email",
        method="POST",
        path="/v1/contacts",
        kwargs=dict(json={"name": "N", "email": "not-an-email"}),
        status=422,
        errors="email",
    ),
    dict(
        id="name-not-a-string",
        method="POST",
        path="/v1/contacts",
        kwargs=dict(json={"name": 7, "email": "n@example.com"}),
        status=422,
        errors="name",
    ),
    dict(
        id="bad-role",
        method="POST",
        path="/v1/agents",
        kwargs=dict(json={"name": "N", "email": "n@example.com", "role": "root"}),
        status=422,
        errors="role",
    ),
    dict(
        id="consent-not-bool",
        method="PUT",
        path="/v1/contacts/{contact}/consent",
        kwargs=dict(json={"marketing": "yes", "source": "form"}),
        status=422,
        errors="marketing",
    ),
    dict(
        id="empty-patch",
        method="PATCH",
        path="/v1/contacts/{contact}",
        kwargs=dict(json={}, headers={"If-Match": '"1"'}),
        status=422,
        errors="_schema",
    ),
    dict(id="limit-0", method="GET", path="/v1/agents?limit=0", status=422, errors="limit"),
    dict(id="limit-500", method="GET", path="/v1/contacts?limit=500", status=422, errors="limit"),
    dict(
        id="limit-not-a-number",
        method="GET",
        path="/v1/agents?limit=ten",
        status=422,
        errors="limit",
    ),
    dict(
        id="garbage-cursor",
        method="GET",
        path="/v1/agents",
        kwargs=dict(params={"cursor": "%%%garbage!"}),
        status=422,
        errors="cursor",
    ),
    dict(
        id="base64-garbage-cursor",
        method="GET",
        path="/v1/contacts?cursor=bm90IGpzb24",
        status=422,
        errors="cursor",
    ),
    # 404
    dict(id="unknown-agent", method="GET", path="/v1/agents/{random}", status=404),
    dict(id="non-uuid-agent", method="GET", path="/v1/agents/not-a-uuid", status=404),
    dict(id="deactivate-unknown-agent", method="DELETE", path="/v1/agents/{random}", status=404),
    dict(id="deactivate-non-uuid-agent", method="DELETE", path="/v1/agents/x1", status=404),
    dict(
        id="keys-of-unknown-agent", method="POST", path="/v1/agents/{random}/api-keys", status=404
    ),
    dict(
        id="unknown-key", method="DELETE", path="/v1/agents/{admin}/api-keys/{random}", status=404
    ),
    dict(id="non-uuid-key", method="DELETE", path="/v1/agents/{admin}/api-keys/nope", status=404),
    dict(id="unknown-contact", method="GET", path="/v1/contacts/{random}", status=404),
    dict(id="non-uuid-contact", method="GET", path="/v1/contacts/12345", status=404),
    dict(
        id="patch-unknown-contact",
        method="PATCH",
        path="/v1/contacts/{random}",
        kwargs=dict(json={"name": "N"}, headers={"If-Match": '"1"'}),
        status=404,
    ),
    dict(
        id="consent-of-unknown-contact",
        method="GET",
        path="/v1/contacts/{random}/consent",
        status=404,
    ),
    dict(
        id="set-consent-of-unknown-contact",
        method="PUT",
        path="/v1/contacts/{random}/consent",
        kwargs=dict(json={"marketing": True, "source": "form"}),
        status=404,
    ),
    dict(id="unknown-route", method="GET", path="/v1/nothing-here", status=404),
    # 405
    dict(id="put-tenant", method="PUT", path="/v1/tenant", status=405, allow=True),
    dict(id="delete-contacts", method="DELETE", path="/v1/contacts", status=405, allow=True),
    dict(id="get-signup", method="GET", path="/v1/signup", auth=False, status=405, allow=True),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c["id"] for c in ERROR_CASES])
def test_errors_are_problems(stack, case):
    signed = sign_up(stack)
    key = signed["api_key"]
    contact_id = create_contact(stack, key)["id"]
    path = case["path"].format(random=_random(), admin=signed["agent"]["id"], contact=contact_id)
    kwargs = dict(case.get("kwargs", {}))
    response = stack.call(
        case["method"], path, key=key if case.get("auth", True) else None, **kwargs
    )
    body = assert_problem(response, case["status"])
    if case.get("errors"):
        assert case["errors"] in body.get("errors", {}), body
    if case["status"] == 401:
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    if case.get("allow"):
        assert response.headers.get("Allow"), "a 405 names the methods allowed"


def test_a_forged_cursor_that_decodes_is_refused_not_a_server_error(stack):
    import base64
    import json

    key = sign_up(stack)["api_key"]
    forged = {"after": f"2020-W01-1|{uuid.uuid4()}"}
    cursor = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    response = stack.call("GET", "/v1/agents", key=key, params={"cursor": cursor})
    assert_problem(response, 422)
