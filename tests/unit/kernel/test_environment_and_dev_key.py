"""LEDGERDESK_ENV is one of a closed set, and production refuses the development audit key in
the published list: a misspelt environment, or the repository's key, would run a deployment on
secrets anyone can read."""

from __future__ import annotations

import dataclasses
import json

import pytest

from kernel.config import ConfigurationError, Settings
from kernel.signing import DEV_SIGNING_SEED, published_keys, signer_from_config

OWN_SEED = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="


@pytest.mark.parametrize("value", ["prod", "produciton", "staging", "Production-1"])
def test_an_environment_not_in_the_set_is_refused(value):
    with pytest.raises(ConfigurationError, match="LEDGERDESK_ENV must be one of"):
        Settings.from_env({"LEDGERDESK_ENV": value}, service="prepare")


@pytest.mark.parametrize(
    ("value", "taken"),
    [("development", "development"), ("test", "test"), (" Production ", "production")],
)
def test_the_known_environments_are_taken(value, taken):
    raw = {"LEDGERDESK_ENV": value}
    if taken == "production":
        raw["LEDGERDESK_AUDIT_PUBLIC_KEYS"] = keys_of(OWN_SEED)
    assert Settings.from_env(raw, service="prepare").environment == taken


def keys_of(seed: str) -> str:
    public = signer_from_config(seed).public_key_b64
    entry = {"public_key": public, "valid_from": "1970-01-01T00:00:00+00:00", "valid_until": None}
    return json.dumps([entry])


def in_production(seed: str) -> Settings:
    listed = Settings.from_env({"LEDGERDESK_AUDIT_PUBLIC_KEYS": keys_of(seed)}, service="gateway")
    return dataclasses.replace(listed, environment="production")


def test_production_refuses_the_development_key_in_the_published_list():
    with pytest.raises(ConfigurationError, match="development key"):
        published_keys(in_production(DEV_SIGNING_SEED))


def test_production_takes_a_key_of_its_own():
    keys = published_keys(in_production(OWN_SEED))
    assert [k.public_key for k in keys] == [signer_from_config(OWN_SEED).public_key]
