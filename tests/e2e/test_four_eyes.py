"""Four eyes that hold: one admin's key alone cannot get a request that waits for approval
through, nor lift the approval policy. Each attack below is one that went through before."""

from __future__ import annotations

import uuid

import psycopg2

from kernel.testing import wait_until
from tests.e2e.helpers import admin, create_agent, file, issue_key, make_contact


def new_admin(stack, key) -> dict:
    """An admin created now with ``key``: its id and the key it is created with."""
    return create_agent(stack, key, "admin")


def colleague(stack, key) -> dict:
    """An admin created now with ``key`` who has claimed a key of her own, as a real colleague
    would on receiving the one she was created with."""
    created = new_admin(stack, key)
    return {**created, "api_key": stack.claim_key(created["api_key"])}


def policy(stack, key, types):
    return stack.call(
        "PUT", "/v1/privacy/approval-policy", key=key, json={"requires_approval": types}
    )


def decide(stack, key, request_id, decision="approve", reason="checked"):
    return stack.call(
        "POST", f"/v1/privacy/requests/{request_id}/{decision}", key=key, json={"reason": reason}
    )


def decide_change(stack, key, change_id, decision="approve", reason="checked"):
    return stack.call(
        "POST",
        f"/v1/privacy/approval-policy/changes/{change_id}/{decision}",
        key=key,
        json={"reason": reason},
    )


def refused(response, status, words):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert words in response.json()["detail"], response.json()


def erasure_waiting(stack, key) -> dict:
    contact = make_contact(stack, key, "Wren Waiting")
    filed = file(stack, key, {"type": "erasure", "subject": {"contact_id": contact["id"]}})
    assert filed["status"] == "awaiting_approval", filed
    return filed


def ledger(stack, key, type_):
    return stack.call("GET", f"/v1/audit/entries?type={type_}&limit=200", key=key).json()["items"]


def in_ledger(stack, key, type_, **payload):
    def found():
        for entry in ledger(stack, key, type_):
            if all(entry["payload"].get(k) == v for k, v in payload.items()):
                return entry
        return None

    return wait_until(found, what=f"{type_} {payload} in the ledger")


# --- attack 1: an admin created after the filing approves it ---------------------------------


def test_an_admin_created_after_a_request_was_filed_cannot_decide_it(stack):
    key, _ = admin(stack)
    before = colleague(stack, key)
    assert policy(stack, key, ["erasure"]).status_code == 200
    filed = erasure_waiting(stack, key)
    # The filer creates an admin of her own making, claims its key, and approves with it.
    after = colleague(stack, key)
    refused(decide(stack, after["api_key"], filed["id"]), 403, "already an admin when")
    refused(decide(stack, after["api_key"], filed["id"], "deny"), 403, "already an admin when")
    assert stack.call("GET", f"/v1/privacy/requests/{filed['id']}", key=key).json()["status"] == (
        "awaiting_approval"
    )
    # An admin from before the filing, with the key she claimed before it, still may.
    approved = decide(stack, before["api_key"], filed["id"], reason="seen the signed letter")
    assert approved.status_code == 200, approved.text
    assert approved.json()["approval"]["decided_by"] == before["id"]


# --- attack 2: a key minted for another admin approves the minter's request ------------------


def test_a_key_an_admin_minted_for_another_cannot_decide_her_requests(stack):
    key, created = admin(stack)
    ada = created["agent"]["id"]
    bea = colleague(stack, key)
    cy = colleague(stack, key)
    assert policy(stack, key, ["erasure"]).status_code == 200
    # Ada mints a key for Bea (who was an admin before the filing) and approves as her.
    for_bea = issue_key(stack, key, bea["id"])
    filed = erasure_waiting(stack, key)
    refused(decide(stack, for_bea["api_key"], filed["id"]), 403, "issued by the admin who filed")
    refused(decide(stack, for_bea["api_key"], filed["id"], "deny"), 403, "issued by")
    # Nor through a key or an admin made with that key: a key another admin made (and may
    # have kept) mints nothing and creates no one, or what it made would answer to Bea alone.
    for made in (
        stack.call("POST", f"/v1/agents/{bea['id']}/api-keys", key=for_bea["api_key"]),
        stack.call(
            "POST",
            "/v1/agents",
            key=for_bea["api_key"],
            json={"name": "Puppet", "email": "puppet@example.com", "role": "admin"},
        ),
        stack.call(
            "POST",
            "/v1/agents",
            key=new_admin(stack, key)["api_key"],
            json={"name": "Puppet", "email": "puppet@example.com", "role": "admin"},
        ),
    ):
        refused(made, 403, "claim a key of your own")
    # Nor the other way round: Ada files as Bea, with the key she minted, and approves herself.
    contact = make_contact(stack, key, "Fen Filed")
    as_bea = file(
        stack, for_bea["api_key"], {"type": "erasure", "subject": {"contact_id": contact["id"]}}
    )
    assert as_bea["filed_by"] == bea["id"]
    refused(decide(stack, key, as_bea["id"]), 403, "issued")

    # A key Bea mints for herself with a key of her own is hers; one Cy mints for Bea answers
    # to Cy: it may decide Ada's requests, not Cy's (and only those filed after it was minted).
    own = issue_key(stack, bea["api_key"], bea["id"])
    by_cy = issue_key(stack, cy["api_key"], bea["id"])
    refused(decide(stack, by_cy["api_key"], filed["id"]), 403, "issued after")
    contact = make_contact(stack, key, "Gil Filed")
    cys = file(stack, cy["api_key"], {"type": "erasure", "subject": {"contact_id": contact["id"]}})
    adas = erasure_waiting(stack, key)
    refused(decide(stack, by_cy["api_key"], cys["id"]), 403, "issued by")
    assert decide(stack, own["api_key"], cys["id"]).status_code == 200
    assert decide(stack, by_cy["api_key"], adas["id"]).status_code == 200

    # Each issuance reaches the ledger, ids only: whom the key answers to, never the key or
    # its hash.
    entry = in_ledger(stack, key, "api_key_issued", key_id=for_bea["id"])
    assert entry["payload"] == {
        "agent_id": bea["id"],
        "key_id": for_bea["id"],
        "issuer_id": ada,
    }
    assert entry["actor_id"] == ada
    assert (
        in_ledger(stack, key, "api_key_issued", key_id=own["id"])["payload"]["issuer_id"]
        == (bea["id"])
    )
    assert (
        in_ledger(stack, key, "api_key_issued", key_id=by_cy["id"])["payload"]["issuer_id"]
        == (cy["id"])
    )
    issued = str(ledger(stack, key, "api_key_issued"))
    for secret in (for_bea["api_key"], own["api_key"], "key_hash"):
        assert secret not in issued


# --- attack 4: the creator keeps the key she created a colleague with -----------------------


def test_the_key_an_admin_was_created_with_answers_to_her_creator_until_she_claims_her_own(stack):
    key, created = admin(stack)
    ada = created["agent"]["id"]
    bea = new_admin(stack, key)
    kept = bea["api_key"]  # Ada saw it when she created Bea, and kept a copy
    me = stack.call("GET", "/v1/me", key=kept).json()
    assert (me["agent_id"], me["key_is_own"]) == (bea["id"], False)
    assert stack.call("GET", "/v1/me", key=key).json()["key_is_own"] is True
    assert in_ledger(stack, key, "api_key_issued", agent_id=bea["id"])["payload"]["issuer_id"] == (
        ada
    )
    assert policy(stack, key, ["erasure"]).status_code == 200
    filed = erasure_waiting(stack, key)
    # The key Bea was created with is one Ada holds too: it does not count as Bea's eyes.
    refused(decide(stack, kept, filed["id"]), 403, "issued by the admin who filed")

    # Bea claims a key of her own: Ada's copy stops working, everywhere, at once.
    claimed = stack.call("POST", "/v1/me/api-keys", key=kept)
    assert claimed.status_code == 201, claimed.text
    own = claimed.json()
    assert own["agent_id"] == bea["id"] and own["revoked_key_ids"]
    assert stack.call("GET", "/v1/me", key=kept).status_code == 401
    assert stack.call("GET", "/v1/me", key=own["api_key"]).json()["key_is_own"] is True
    # Claimed after the filing, it may not decide that one (Ada, with her copy, could have
    # claimed it just to approve): requests filed from now on, it may.
    refused(decide(stack, own["api_key"], filed["id"]), 403, "issued after")
    later = erasure_waiting(stack, key)
    assert decide(stack, own["api_key"], later["id"]).status_code == 200
    entry = in_ledger(stack, key, "api_key_issued", key_id=own["id"])
    assert entry["payload"]["issuer_id"] == bea["id"] and entry["actor_id"] == bea["id"]
    for key_id in own["revoked_key_ids"]:
        in_ledger(stack, key, "api_key_revoked", key_id=key_id)
    assert own["api_key"] not in str(ledger(stack, key, "api_key_issued"))

    # Had Ada claimed with her copy first, Bea's own key ends: she finds herself locked out,
    # and the claim is in the ledger under her id. A second claim ends the first.
    stolen = stack.claim_key(issue_key(stack, key, bea["id"])["api_key"])
    assert stack.call("GET", "/v1/me", key=own["api_key"]).status_code == 401
    assert stack.call("POST", "/v1/me/api-keys", key=own["api_key"]).status_code == 401
    assert stack.call("GET", "/v1/me", key=stolen).json()["key_is_own"] is True


# --- attack 3: the filer lifts the policy and files again ------------------------------------


def test_lifting_or_narrowing_the_policy_waits_for_another_admin(stack):
    key, created = admin(stack)
    ada = created["agent"]["id"]
    bea = colleague(stack, key)
    assert policy(stack, key, ["erasure"]).status_code == 200
    lifted = policy(stack, key, [])
    assert lifted.status_code == 202, lifted.text
    change = lifted.json()
    assert change["status"] == "awaiting_approval"
    assert (change["requires_approval"], change["based_on"], change["filed_by"]) == (
        [],
        ["erasure"],
        ada,
    )
    assert change["approval"] is None
    # Until another admin approves, erasures still wait.
    current = stack.call("GET", "/v1/privacy/approval-policy", key=key).json()
    assert current == {"requires_approval": ["erasure"], "source": "tenant"}
    assert erasure_waiting(stack, key)["status"] == "awaiting_approval"
    listed = stack.call(
        "GET", "/v1/privacy/approval-policy/changes?status=awaiting_approval", key=key
    ).json()
    assert [c["id"] for c in listed["items"]] == [change["id"]]
    # Not by the filer, not with a key she minted, not by an admin she made after filing.
    refused(decide_change(stack, key, change["id"]), 409, "filed")
    refused(
        decide_change(stack, issue_key(stack, key, bea["id"])["api_key"], change["id"]),
        403,
        "issued",
    )
    refused(decide_change(stack, new_admin(stack, key)["api_key"], change["id"]), 403, "issued")
    refused(decide_change(stack, colleague(stack, key)["api_key"], change["id"]), 403, "already")
    approved = decide_change(stack, bea["api_key"], change["id"], reason="we stop holding them")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["approval"]["reason"] == "we stop holding them"
    assert stack.call("GET", "/v1/privacy/approval-policy", key=key).json() == {
        "requires_approval": [],
        "source": "tenant",
    }
    refused(decide_change(stack, bea["api_key"], change["id"], "deny"), 409, "approved")

    # Widening applies at once, as before; narrowing waits, and a denial leaves the policy.
    widened = policy(stack, key, ["erasure", "restriction"])
    assert widened.status_code == 200 and widened.json()["requires_approval"] == [
        "erasure",
        "restriction",
    ]
    narrowed = policy(stack, key, ["erasure"])
    assert narrowed.status_code == 202, narrowed.text
    denied = decide_change(stack, bea["api_key"], narrowed.json()["id"], "deny", "keep both")
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    assert stack.call("GET", "/v1/privacy/approval-policy", key=key).json()[
        "requires_approval"
    ] == ["erasure", "restriction"]

    # A newer filing supersedes a waiting change, and so does a change applied meanwhile: a
    # change approved later would undo it.
    first = policy(stack, key, ["restriction"]).json()
    second = policy(stack, key, ["erasure"]).json()
    assert stack.call("GET", f"/v1/privacy/approval-policy/changes/{first['id']}", key=key).json()[
        "status"
    ] == ("superseded")
    refused(decide_change(stack, bea["api_key"], first["id"]), 409, "superseded")
    assert policy(stack, bea["api_key"], ["erasure", "restriction", "objection"]).status_code == 200
    refused(decide_change(stack, bea["api_key"], second["id"]), 409, "superseded")


# --- attack 5: the filer shortens a retention period so the schedule erases for her ---------


def period(stack, key, category, days):
    return stack.call("PUT", f"/v1/retention/policies/{category}", key=key, json={"days": days})


def days_of(stack, key, category):
    items = stack.call("GET", "/v1/retention/policies", key=key).json()["items"]
    return next(p["days"] for p in items if p["category"] == category)


def decide_period(stack, key, change_id, decision="approve", reason="checked"):
    return stack.call(
        "POST",
        f"/v1/retention/period-changes/{change_id}/{decision}",
        key=key,
        json={"reason": reason},
    )


def test_shortening_a_retention_period_while_erasure_needs_approval_waits_for_another_admin(
    stack,
):
    key, created = admin(stack)
    ada = created["agent"]["id"]
    bea = colleague(stack, key)
    # Without an approval policy naming erasure, a period changes at once, both ways.
    assert period(stack, key, "closed_tickets", 100).status_code == 200
    assert period(stack, key, "closed_tickets", 90).status_code == 200
    assert policy(stack, key, ["erasure"]).status_code == 200

    # Lengthening applies at once; shortening (closed tickets' words purged sooner) waits.
    assert period(stack, key, "closed_tickets", 120).json()["days"] == 120
    shortened = period(stack, key, "closed_tickets", 1)
    assert shortened.status_code == 202, shortened.text
    change = shortened.json()
    assert (change["status"], change["category"], change["days"], change["based_on_days"]) == (
        "awaiting_approval",
        "closed_tickets",
        1,
        120,
    )
    assert change["filed_by"] == ada and change["approval"] is None
    assert days_of(stack, key, "closed_tickets") == 120
    listed = stack.call(
        "GET", "/v1/retention/period-changes?status=awaiting_approval", key=key
    ).json()
    assert [c["id"] for c in listed["items"]] == [change["id"]]

    # Not by the filer, not with a key she minted or created an admin with, nor by an admin
    # she made after filing.
    refused(decide_period(stack, key, change["id"]), 409, "filed")
    refused(
        decide_period(stack, issue_key(stack, key, bea["id"])["api_key"], change["id"]),
        403,
        "issued",
    )
    refused(decide_period(stack, new_admin(stack, key)["api_key"], change["id"]), 403, "issued")
    refused(decide_period(stack, colleague(stack, key)["api_key"], change["id"]), 403, "already")
    # Another tenant's admin does not see it.
    stranger, _ = admin(stack)
    assert decide_period(stack, stranger, change["id"]).status_code == 404
    assert (
        stack.call("GET", f"/v1/retention/period-changes/{change['id']}", key=stranger).status_code
        == 404
    )

    approved = decide_period(stack, bea["api_key"], change["id"], reason="the DPA says a day")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["approval"]["reason"] == "the DPA says a day"
    assert days_of(stack, key, "closed_tickets") == 1
    refused(decide_period(stack, bea["api_key"], change["id"], "deny"), 409, "approved")

    # A denial leaves the period; a newer filing supersedes a waiting one.
    waiting = period(stack, key, "access_log", 10).json()
    denied = decide_period(stack, bea["api_key"], waiting["id"], "deny", "we need them for fraud")
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    first = period(stack, key, "access_log", 20).json()
    second = period(stack, key, "access_log", 30).json()
    assert (
        stack.call("GET", f"/v1/retention/period-changes/{first['id']}", key=key).json()["status"]
        == "superseded"
    )
    assert second["status"] == "awaiting_approval"
    assert days_of(stack, key, "access_log") == 60

    # The ledger has the filing, the decisions (reasons sealed) and every period that applied.
    in_ledger(stack, key, "retention_period_change_filed", change_id=change["id"])
    decided = in_ledger(stack, key, "retention_period_change_approved", change_id=change["id"])
    assert decided["payload"]["decided_by"] == bea["id"]
    assert decided["payload"]["reason_sealed"].startswith('{"$enc"')
    assert "the DPA says a day" not in str(decided)
    applied = in_ledger(
        stack, key, "retention_period_changed", change_id=change["id"], category="closed_tickets"
    )
    assert applied["payload"]["days"] == 1
    at_once = in_ledger(stack, key, "retention_period_changed", days=120)
    assert at_once["payload"]["change_id"] is None and at_once["actor_id"] == ada


# --- the ledger: who decided what, with the reason sealed ------------------------------------


def test_the_ledger_records_each_decision_with_its_key_and_sealed_reason(stack):
    key, created = admin(stack)
    bea = colleague(stack, key)
    assert policy(stack, key, ["erasure"]).status_code == 200
    filed = erasure_waiting(stack, key)
    reason = f"Quill Ledgerby's passport seen {uuid.uuid4().hex[:6]}"
    assert decide(stack, bea["api_key"], filed["id"], "deny", reason).status_code == 200
    change = policy(stack, key, []).json()
    change_reason = f"Quill Ledgerby asked us to stop {uuid.uuid4().hex[:6]}"
    assert decide_change(stack, bea["api_key"], change["id"], "approve", change_reason).ok

    me = stack.call("GET", "/v1/me", key=bea["api_key"]).json()
    assert me["agent_id"] == bea["id"]
    denial = in_ledger(stack, key, "privacy_request_denied", request_id=filed["id"])
    approval = in_ledger(stack, key, "approval_policy_change_approved", change_id=change["id"])
    for entry, decision in ((denial, "denied"), (approval, "approved")):
        payload = entry["payload"]
        assert entry["actor_id"] == bea["id"]
        assert payload["decided_by"] == bea["id"] and payload["decision"] == decision
        assert payload["key_issuer_id"] == bea["id"]
        uuid.UUID(payload["key_id"])
        assert payload["reason_sealed"].startswith('{"$enc"')
    assert reason not in str(denial) and change_reason not in str(approval)
    # The sealed reason is the one retention keeps (and opens for the API), under the tenant's
    # key: the tenant's destruction makes it unreadable in the ledger too.
    with psycopg2.connect(stack.settings.database_dsn("retention")) as conn, conn.cursor() as cur:
        cur.execute("SELECT decision_reason_sealed FROM requests WHERE id = %s", (filed["id"],))
        assert cur.fetchone()[0] == denial["payload"]["reason_sealed"]
        cur.execute(
            "SELECT decision_reason_sealed FROM approval_policy_changes WHERE id = %s",
            (change["id"],),
        )
        assert cur.fetchone()[0] == approval["payload"]["reason_sealed"]
    shown = stack.call("GET", f"/v1/privacy/requests/{filed['id']}", key=key).json()
    assert shown["approval"]["reason"] == reason
    # The filing and the change that applied are there too.
    in_ledger(stack, key, "approval_policy_change_filed", change_id=change["id"])
    applied = in_ledger(stack, key, "approval_policy_changed", change_id=change["id"])
    assert applied["payload"]["requires_approval"] == []
