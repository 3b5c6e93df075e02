"""Each process reads only the secrets it uses (``SERVICE_SECRETS``), and production checks
only those: a process needs no secret it does not use, and holds none even when given it."""

from __future__ import annotations

import traceback

import pytest

from kernel.config import (
    DEV_API_KEY_SECRET,
    DEV_AUDIT_SIGNING_KEY,
    SECRET_FIELDS,
    SERVICE_SECRETS,
    ConfigurationError,
    Settings,
)
from tests.unit.kernel.test_config_secrets import B64_A, PRODUCTION_SECRETS


def _refusal(env: dict[str, str], service: str) -> str:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env, service=service)
    shown = "".join(traceback.format_exception(info.value))
    for name in SECRET_FIELDS:
        value = env.get(f"LEDGERDESK_{name}", "")
        assert not value or value not in shown
    return str(info.value)


ALL_GIVEN = {
    **PRODUCTION_SECRETS,
    "LEDGERDESK_MASTER_KEY": f"prod-2026:{B64_A}",
}


def test_every_process_of_the_platform_has_its_secrets_declared():
    from services.platform import SERVICES

    # The router in front of the region cells holds no cell's data key, only the API key
    # secret every cell shares (it recognises a moved tenant's keys by their keyed hash).
    assert set(SERVICE_SECRETS) == {*SERVICES, "gateway", "prepare", "router", "directory-sync"}
    assert SERVICE_SECRETS["router"] == frozenset({"API_KEY_SECRET"})
    # A cell's reconciliation of the directory reads ids and writes ids: no secret at all.
    assert SERVICE_SECRETS["directory-sync"] == frozenset()
    for name, secrets in SERVICE_SECRETS.items():
        assert secrets <= set(SECRET_FIELDS), name
    # The audit seed is audit's (and, for erasure receipts, retention's): the gateway publishes
    # the public key, and never holds the seed.
    assert "AUDIT_SIGNING_KEY" not in SERVICE_SECRETS["gateway"]
    assert "OPERATOR_TOKEN" in SERVICE_SECRETS["gateway"]
    # Accounts hashes the keys it issues; the gateway hashes a presented key to find it in its
    # credentials; the router hashes it to recognise a moved tenant's. No one else holds the
    # key that makes the hashes.
    holders = [n for n, s in SERVICE_SECRETS.items() if "API_KEY_SECRET" in s]
    assert holders == ["accounts", "gateway", "router"]
    assert [n for n, s in SERVICE_SECRETS.items() if "OPERATOR_TOKEN" in s] == ["gateway"]


@pytest.mark.parametrize("service", sorted(SERVICE_SECRETS))
def test_in_production_a_process_starts_with_only_its_own_secrets(service: str):
    own = {
        f"LEDGERDESK_{name}": ALL_GIVEN[f"LEDGERDESK_{name}"] for name in SERVICE_SECRETS[service]
    }

    settings = Settings.from_env({"LEDGERDESK_ENV": "production", **own}, service=service)

    assert settings.held_secrets == SERVICE_SECRETS[service]


@pytest.mark.parametrize("service", sorted(SERVICE_SECRETS))
def test_a_process_holds_no_secret_it_does_not_use_even_when_given_it(service: str):
    settings = Settings.from_env(ALL_GIVEN, service=service)

    for name, field_name in SECRET_FIELDS.items():
        held = getattr(settings, field_name)
        if name in SERVICE_SECRETS[service]:
            assert held, f"{service} lost its {name}"
        else:
            assert not held, f"{service} holds {name}, which it does not use"


@pytest.mark.parametrize("service", sorted(SERVICE_SECRETS))
def test_production_checks_only_the_secrets_a_process_uses(service: str):
    own = {f"LEDGERDESK_{n}": ALL_GIVEN[f"LEDGERDESK_{n}"] for n in SERVICE_SECRETS[service]}
    for name in SERVICE_SECRETS[service]:
        env = {"LEDGERDESK_ENV": "production", **own}
        del env[f"LEDGERDESK_{name}"]
        message = _refusal(env, service=service)
        assert f"LEDGERDESK_{name}" in message
        assert all(f"LEDGERDESK_{n}" not in message for n in SECRET_FIELDS if n != name)


def test_in_development_a_process_keeps_the_development_values_of_the_others():
    settings = Settings.from_env({"LEDGERDESK_API_KEY_SECRET": "given"}, service="tickets")

    assert settings.api_key_secret == DEV_API_KEY_SECRET
    assert settings.audit_signing_key == DEV_AUDIT_SIGNING_KEY


def test_an_undeclared_service_is_refused_in_production_and_holds_nothing_elsewhere():
    with pytest.raises(ConfigurationError, match="SERVICE_SECRETS"):
        Settings.from_env(ALL_GIVEN, service="newcomer")

    assert Settings.from_env({}, service="newcomer").held_secrets == frozenset()
