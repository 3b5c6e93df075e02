"""Unit tests for accounts' rules: sign-up, agents, API keys and the sign-up command."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from marshmallow import ValidationError

from kernel.aggregate import Aggregate, RecordedEvent
from kernel.crypto import apikeys
from kernel.envelope import new_envelope
from kernel.errors import Conflict, ValidationFailed
from services.accounts.commands import ChangeTenantRegionV1, SignUpV1
from services.accounts.domain import DEFAULT_PLAN, Agent, Tenant
from services.accounts.events import REGISTRY

REGIONS = ("uk", "in", "sg")
POLICY = "2026-01"
ADMIN_ID = uuid.UUID("8d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6")


def sign_up(**changes: Any) -> Tenant:
    arguments: dict[str, Any] = {
        "company": "Acme Ltd",
        "region": "uk",
        "age_confirmed": True,
        "policy_version": POLICY,
        "allowed_regions": REGIONS,
        "current_policy_version": POLICY,
        "admin_agent_id": ADMIN_ID,
    }
    arguments.update(changes)
    return Tenant.sign_up(**arguments)


# --- Tenant.sign_up --------------------------------------------------------------------------


def test_sign_up_records_tenant_created_and_applies_it():
    tenant = sign_up()

    assert uuid.UUID(tenant.id).version == 4
    assert tenant.version == 0
    assert tenant.stream_id == f"tenant-{tenant.id}"
    assert (tenant.company, tenant.region, tenant.plan, tenant.status) == (
        "Acme Ltd",
        "uk",
        DEFAULT_PLAN,
        "active",
    )
    assert tenant.pending == [
        RecordedEvent(
            "tenant_created",
            {
                "tenant_id": tenant.id,
                "company": "Acme Ltd",
                "region": "uk",
                "plan": "standard",
                "policy_version": POLICY,
                "admin_agent_id": str(ADMIN_ID),
            },
        )
    ]


def test_the_recorded_payload_is_valid_for_the_declared_event_type():
    (event,) = sign_up().pending

    loaded = REGISTRY[event.type].validate(event.payload)

    assert loaded["admin_agent_id"] == ADMIN_ID


def test_two_sign_ups_get_different_ids():
    assert sign_up().id != sign_up().id


def test_an_unknown_region_is_refused():
    with pytest.raises(ValidationFailed) as info:
        sign_up(region="us")

    assert info.value.errors == {"region": ["must be one of: uk, in, sg"]}
    assert info.value.detail == "the request is not valid"


@pytest.mark.parametrize("value", [False, None, 1, "yes", "true"])
def test_age_must_be_confirmed_with_true_itself(value: Any):
    with pytest.raises(ValidationFailed) as info:
        sign_up(age_confirmed=value)

    assert info.value.errors == {"age_confirmed": ["the minimum age must be confirmed"]}


@pytest.mark.parametrize("accepted", ["2025-06", "", "2026-01 "])
def test_only_the_current_policy_version_is_accepted(accepted: str):
    with pytest.raises(ValidationFailed) as info:
        sign_up(policy_version=accepted)

    assert info.value.errors == {"accept_policy_version": ["the current policy version is 2026-01"]}


def test_every_broken_rule_is_reported_together():
    with pytest.raises(ValidationFailed) as info:
        sign_up(region="mars", age_confirmed=False, policy_version="old")

    assert info.value.errors == {
        "region": ["must be one of: uk, in, sg"],
        "age_confirmed": ["the minimum age must be confirmed"],
        "accept_policy_version": ["the current policy version is 2026-01"],
    }


def test_allowed_regions_come_from_the_caller():
    assert sign_up(region="us", allowed_regions=("us",)).region == "us"

    with pytest.raises(ValidationFailed) as info:
        sign_up(region="uk", allowed_regions=())

    assert info.value.errors == {"region": ["must be one of: "]}


def test_tenant_is_rebuilt_from_its_history():
    signed_up = sign_up()
    (event,) = signed_up.pending
    stored = new_envelope(
        type=event.type,
        schema_version=1,
        source="accounts",
        stream_id=signed_up.stream_id,
        stream_version=1,
        tenant_id=uuid.UUID(signed_up.id),
        actor_id=None,
        payload=event.payload,
    )

    rebuilt = Tenant.from_history(signed_up.id, [stored])

    assert rebuilt.version == 1
    assert rebuilt.pending == []
    assert (rebuilt.company, rebuilt.region, rebuilt.plan, rebuilt.status) == (
        "Acme Ltd",
        "uk",
        "standard",
        "active",
    )


# --- Agent -----------------------------------------------------------------------------------


def test_agent_create_and_issue_api_key():
    agent_id = uuid.uuid4()
    key_id = uuid.uuid4()

    agent = Agent.create(
        agent_id=agent_id, tenant_id="t-1", role="admin", name="Ada", email="ada@example.com"
    )
    agent.issue_api_key(key_id, "f" * 64, str(agent_id))

    assert agent.id == str(agent_id)
    assert agent.stream_id == f"agent-{agent_id}"
    assert (agent.tenant_id, agent.role, agent.name, agent.email) == (
        "t-1",
        "admin",
        "Ada",
        "ada@example.com",
    )
    assert agent.key_ids == (str(key_id),)
    assert [event.type for event in agent.pending] == ["agent_created", "api_key_issued"]
    assert agent.pending[0].payload == {
        "agent_id": str(agent_id),
        "tenant_id": "t-1",
        "role": "admin",
        "name": "Ada",
        "email": "ada@example.com",
    }
    assert agent.pending[1].payload == {
        "agent_id": str(agent_id),
        "key_id": str(key_id),
        "key_hash": "f" * 64,
        "issuer_id": str(agent_id),
    }


def test_an_agent_keeps_every_issued_key_in_order():
    agent = Agent.create(
        agent_id=uuid.uuid4(), tenant_id="t", role="agent", name="B", email="b@x.io"
    )
    first, second = uuid.uuid4(), uuid.uuid4()

    agent.issue_api_key(first, "h1", agent.id)
    agent.issue_api_key(second, "h2", agent.id)

    assert agent.key_ids == (str(first), str(second))


def test_agent_created_declares_its_personal_fields():
    agent_created = REGISTRY["agent_created"]

    assert agent_created.personal_fields == ("name", "email")
    assert agent_created.subject_field == "agent_id"


def test_the_company_is_a_tenant_field_and_destruction_is_not_published():
    assert REGISTRY["tenant_created"].tenant_fields == ("company",)
    assert REGISTRY["tenant_destroyed"].published is False


def test_a_tenant_is_destroyed_once_and_nothing_follows():
    tenant = sign_up()
    request = str(uuid.uuid4())
    assert tenant.destroy(request) is True
    assert tenant.status == "destroyed"
    assert tenant.pending[-1] == RecordedEvent(
        "tenant_destroyed", {"tenant_id": tenant.id, "request_id": request}
    )
    assert tenant.destroy(str(uuid.uuid4())) is False
    assert len(tenant.pending) == 2
    with pytest.raises(Conflict, match="destroyed"):
        tenant.cancel(dt.datetime.now(dt.UTC), dt.timedelta(days=21))
    with pytest.raises(Conflict):
        tenant.reactivate(dt.datetime.now(dt.UTC))


# --- Tenant.change_region (a move between region cells) -------------------------------------


def _stored(tenant: Tenant, events: list[RecordedEvent]) -> list[Any]:
    return [
        new_envelope(
            type=event.type,
            schema_version=1,
            source="accounts",
            stream_id=tenant.stream_id,
            stream_version=n,
            tenant_id=uuid.UUID(tenant.id),
            actor_id=None,
            payload=REGISTRY[event.type].validate(event.payload),
        )
        for n, event in enumerate(events, start=1)
    ]


def test_a_tenant_moved_to_another_region_is_hosted_there_from_then_on():
    tenant = sign_up(region="uk")

    assert tenant.change_region("in", REGIONS) is True

    assert tenant.region == "in"
    assert tenant.pending[-1] == RecordedEvent(
        "tenant_region_changed",
        {"tenant_id": tenant.id, "region": "in", "previous_region": "uk"},
    )
    assert REGISTRY["tenant_region_changed"].published is True
    # Rebuilt from its history, it is still the new region's (GET /v1/tenant reads that).
    rebuilt = Tenant.from_history(tenant.id, _stored(tenant, tenant.pending))
    assert (rebuilt.region, rebuilt.version, rebuilt.company) == ("in", 2, "Acme Ltd")


def test_a_region_change_recorded_again_records_nothing():
    tenant = sign_up(region="uk")
    tenant.change_region("in", REGIONS)

    assert tenant.change_region("in", REGIONS) is False
    assert [e.type for e in tenant.pending] == ["tenant_created", "tenant_region_changed"]
    assert sign_up(region="uk").change_region("uk", REGIONS) is False


def test_a_region_the_cell_does_not_serve_is_refused():
    tenant = sign_up(region="uk")

    with pytest.raises(ValidationFailed) as info:
        tenant.change_region("sg", ("in",))

    assert info.value.errors == {"region": ["must be one of: in"]}
    assert (tenant.region, len(tenant.pending)) == ("uk", 1)


def test_a_destroyed_tenant_changes_region_no_more():
    tenant = sign_up(region="uk")
    tenant.destroy(str(uuid.uuid4()))

    with pytest.raises(Conflict, match="destroyed"):
        tenant.change_region("in", REGIONS)
    assert tenant.region == "uk"


def test_the_region_change_command_takes_a_tenant_id_and_a_region_only():
    loaded = ChangeTenantRegionV1().load({"tenant_id": ADMIN_ID.hex, "region": "in"})
    assert loaded == {"tenant_id": ADMIN_ID, "region": "in"}
    with pytest.raises(ValidationError) as info:
        ChangeTenantRegionV1().load({"tenant_id": "x", "region": "", "company": "Acme"})
    assert set(info.value.messages) == {"tenant_id", "region", "company"}


# --- the aggregate base ----------------------------------------------------------------------


@dataclass
class Counter(Aggregate):
    total: int = 0

    def when_added(self, event: dict[str, Any]) -> None:
        self.total += event["amount"]


def test_record_applies_the_event_and_keeps_it_pending():
    counter = Counter(id="c1")

    counter.record("added", amount=2)
    counter.record("added", amount=5)

    assert counter.total == 7
    assert counter.version == 0
    assert counter.pending == [
        RecordedEvent("added", {"amount": 2}),
        RecordedEvent("added", {"amount": 5}),
    ]


def test_recording_an_event_without_a_handler_fails_and_records_nothing():
    counter = Counter(id="c1")

    with pytest.raises(AttributeError):
        counter.record("removed", amount=1)

    assert counter.pending == []


def test_from_history_applies_in_order_and_takes_the_last_stream_version():
    history = [
        new_envelope(
            type="added",
            schema_version=1,
            source="test",
            stream_id="counter-c1",
            stream_version=version,
            tenant_id=None,
            actor_id=None,
            payload={"amount": amount},
        )
        for version, amount in ((1, 3), (2, 4), (3, 10))
    ]

    counter = Counter.from_history("c1", history)

    assert (counter.id, counter.total, counter.version, counter.pending) == ("c1", 17, 3, [])


def test_stream_ids_are_named_after_the_class():
    assert Counter.stream_id_for("x") == "counter-x"
    assert Tenant.stream_id_for("x") == "tenant-x"


# --- API keys --------------------------------------------------------------------------------


def test_generated_keys_are_prefixed_and_carry_256_bits():
    keys = {apikeys.generate() for _ in range(50)}

    assert len(keys) == 50
    for key in keys:
        assert key.startswith("ldk_")
        body = key.removeprefix("ldk_")
        assert len(body) == 43  # 32 random bytes, url-safe base64 without padding
        assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_keyed_hash_is_hmac_sha256_hex():
    # RFC 4231, test case 2.
    assert apikeys.keyed_hash("Jefe", "what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_keyed_hash_depends_on_the_secret():
    key = "ldk_example"

    assert apikeys.keyed_hash("one", key) != apikeys.keyed_hash("two", key)
    assert apikeys.keyed_hash("one", key) != hashlib.sha256(key.encode()).hexdigest()


def test_matches_only_the_same_key_under_the_same_secret():
    key = apikeys.generate()
    stored = apikeys.keyed_hash("secret", key)

    assert apikeys.matches("secret", key, stored) is True
    assert apikeys.matches("other-secret", key, stored) is False
    assert apikeys.matches("secret", key + "x", stored) is False
    assert apikeys.matches("secret", apikeys.generate(), stored) is False
    assert apikeys.matches("secret", key, stored.upper()) is False


def test_matches_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)

    assert apikeys.matches("s", "k", apikeys.keyed_hash("s", "k")) is True
    assert calls == [(apikeys.keyed_hash("s", "k"), apikeys.keyed_hash("s", "k"))]


# --- the sign-up command ---------------------------------------------------------------------


def command(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "company": "Acme Ltd",
        "region": "uk",
        "admin": {"name": "Ada", "email": "ada@example.com"},
        "age_confirmed": True,
        "accept_policy_version": POLICY,
    }
    data.update(changes)
    return data


def load_errors(data: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        SignUpV1().load(data)
    return info.value.normalized_messages()


def test_a_valid_command_loads_unchanged():
    assert SignUpV1().load(command()) == command()
    assert SignUpV1().load(command(age_confirmed=False))["age_confirmed"] is False


def test_unknown_fields_are_refused_at_both_levels():
    assert load_errors(command(plan="enterprise")) == {"plan": ["Unknown field."]}
    assert load_errors(command(admin={"name": "A", "email": "a@b.io", "role": "owner"})) == {
        "admin": {"role": ["Unknown field."]}
    }


@pytest.mark.parametrize("value", ["true", "yes", "1", "on", None, [], {}])
def test_age_confirmed_accepts_only_a_json_boolean(value: Any):
    assert list(load_errors(command(age_confirmed=value))) == ["age_confirmed"]


@pytest.mark.parametrize("value", [1, 0, 1.0])
def test_age_confirmed_refuses_numbers(value: Any):
    assert list(load_errors(command(age_confirmed=value))) == ["age_confirmed"]


def test_every_field_is_required():
    assert load_errors({}) == {
        name: ["Missing data for required field."]
        for name in ("company", "region", "admin", "age_confirmed", "accept_policy_version")
    }
    assert load_errors(command(admin={})) == {
        "admin": {
            "name": ["Missing data for required field."],
            "email": ["Missing data for required field."],
        }
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"company": ""}, "company"),
        ({"company": "x" * 201}, "company"),
        ({"region": ""}, "region"),
        ({"region": "r" * 21}, "region"),
        ({"accept_policy_version": ""}, "accept_policy_version"),
        ({"accept_policy_version": "p" * 51}, "accept_policy_version"),
        ({"company": 5}, "company"),
        ({"admin": "ada@example.com"}, "admin"),
    ],
)
def test_field_limits(changes: dict[str, Any], field: str):
    assert list(load_errors(command(**changes))) == [field]


def test_the_admin_email_must_be_an_email():
    assert load_errors(command(admin={"name": "Ada", "email": "not-an-email"})) == {
        "admin": {"email": ["Not a valid email address."]}
    }
    assert load_errors(command(admin={"name": "", "email": "a@b.io"})) == {
        "admin": {"name": ["Length must be between 1 and 200."]}
    }
