"""Each setting is declared once (kernel.config.Settings' field metadata); reading it from the
environment, writing it back, and the test kit's ``world_env`` are derived from that."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from decimal import Decimal

import pytest

from kernel.config import (
    ALL_SECRETS,
    SECRET_FIELDS,
    SERVICE_SECRETS,
    Settings,
    declared,
)
from kernel.config_values import Plan
from kernel.signed_note import PublicKey
from kernel.testing import world_env

# Any readable file stands for a certificate or key: the settings only check they can be read.
READABLE = __file__

# A value other than the default for every setting, each one a parser could get wrong: floats
# that are not whole, several master keys in order, a key list with an end, plans and rates.
EVERYTHING_CHANGED = Settings(
    environment="test",
    amqp_uri="amqps://u:p@rabbit-1:5671/v;amqps://u:p@rabbit-2:5671/v",
    amqp_ca_file=READABLE,
    amqp_cert_file=READABLE,
    amqp_key_file=READABLE,
    rabbit_management_url="http://u:p@rabbit-1:15672",
    database_url="postgresql://u:p@db:5433/postgres?sslmode=require",
    database_sslmode="verify-full",
    database_sslrootcert=READABLE,
    database_sslcert=READABLE,
    database_sslkey=READABLE,
    database_prefix="ld_round_trip",
    master_keys={"new": bytes(range(100, 132)), "old": bytes(range(32))},
    api_key_secret="Jq8vX2mR7tLw0pZ4nC6yH1kB9sD3fG5a",
    operator_token="uE3rT7yW1qZ9xC5vB2nM8kL4jH6gF0dS",
    gateway_host="0.0.0.0",
    gateway_port=8123,
    gateway_processes=3,
    rpc_timeout=2.5,
    delivery_limit=4,
    broker_user_check=True,
    dead_letter_ttl_hours=0.25,
    dead_letter_max_messages=7,
    max_workers=6,
    regions=("uk", "us"),
    cells={"uk": "http://gateway-uk:8000", "us": "https://gateway-us:8443"},
    cell_master_keys={"us": {"us-1": bytes(range(50, 82))}, "uk": {"uk-2": bytes(range(7, 39))}},
    cells_mail_in={"uk": "smtp://tickets-uk:2525", "us": "lmtp://tickets-us:24"},
    cells_database_prefixes={"uk": "desk_uk", "us": "desk_us"},
    directory_database_url="postgresql://u:p@router-db:5432/desk_directory",
    directory_sync_minutes=2.5,
    policy_version="2027-03",
    traces_exporter="console",
    relay_batch_size=50,
    key_cache_seconds=0.001,
    grace_days=0.00002,
    audit_signing_key=base64.b64encode(bytes(range(1, 33))).decode(),
    audit_log_origin="audit.example.test/ledger",
    audit_public_keys=(
        PublicKey(bytes(range(32)), valid_until=dt.datetime(2027, 1, 1, tzinfo=dt.UTC)),
        PublicKey(bytes(range(32, 64)), valid_from=dt.datetime(2027, 1, 1, tzinfo=dt.UTC)),
    ),
    checkpoint_seconds=1.5,
    schedule_seconds=0.2,
    export_ttl_seconds=7.5,
    export_lease_seconds=4.5,
    privacy_deadline_days=0.001,
    privacy_due_soon_days=2.5,
    privacy_retry_seconds=0.5,
    day_seconds=2,
    rate_limit=1 / 3,
    rate_burst=7,
    trusted_proxies=("10.0.0.0/8", "2001:db8::/32"),
    client_rate_limit=1e6,
    client_rate_burst=1_000_000,
    auth_failure_rate_limit=0.05,
    auth_failure_burst=2,
    signup_rate_limit=1 / 7,
    signup_burst=1,
    unauthenticated_log_limit=5,
    unauthenticated_log_seconds=0.5,
    credentials_lag_seconds=7.5,
    ops_host="127.0.0.1",
    ops_port=0,
    heartbeat=4,
    log_format="text",
    log_level="warning",
    billing_plans=(Plan("solo", 999, "USD"), Plan("odd-1250", 1250, "GBP")),
    tax_rates={"uk": Decimal("0.175"), "us": Decimal("0")},
    legal_hold_years=7,
    webhook_allow_http=True,
    webhook_allow_private=True,
    webhook_retry_seconds=0.25,
    webhook_retry_hours=0.01,
    webhook_timeout_seconds=2.5,
    webhook_secret_grace_hours=0.5,
    webhook_log_days=0.5,
    attachment_max_bytes=1234567,
    attachments_per_message=3,
    attachment_ticket_bytes=7654321,
    attachment_store="s3",
    attachment_s3_endpoint="https://objects.example.test",
    attachment_s3_bucket="desk-files",
    attachment_s3_region="eu-west-2",
    attachment_s3_access_key_id="AKIAQX7EXAMPLE4KEY9Z",
    attachment_s3_secret_access_key="wJ3kZp8Qv2Lx7Nc4Rt9Yb6Hd1Fg5Sm0Ae8Ku2Wo",
    smtp_host="relay.example.test",
    smtp_port=587,
    smtp_security="starttls",
    smtp_username="desk",
    smtp_password="Rk7wQ2pZ9xL4vN1cT6yB3mH8jD5sF0gA",
    smtp_timeout_seconds=5.0,
    mail_from="Desk <help@desk.example.test>",
    console_url="https://desk.example.test/console",
    mail_retry_seconds=2.0,
    mail_retry_hours=1.0,
    mail_keep_days=1.0,
    mail_in_host="0.0.0.0",
    mail_in_port=24,
    mail_in_protocol="lmtp",
    mail_in_domain="in.example.org",
    mail_in_max_bytes=1 << 20,
    mail_in_max_recipients=3,
    mail_in_max_parts=40,
    mail_in_max_depth=4,
    mail_in_max_header_bytes=8192,
    mail_in_dedup_days=7.0,
    mail_in_peer_rate=5.0,
    mail_in_peer_burst=50,
    mail_in_sender_rate=0.5,
    mail_in_sender_burst=4,
)


def test_every_declared_setting_differs_from_its_default_here():
    """Else the round trip below would not prove that setting is written and read back."""
    default = Settings()
    same = [
        f.name
        for f, _ in declared()
        if getattr(default, f.name) == getattr(EVERYTHING_CHANGED, f.name)
    ]
    assert same == []


def test_settings_read_back_from_their_environment_are_the_same():
    assert Settings.from_env(EVERYTHING_CHANGED.to_env()) == EVERYTHING_CHANGED
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_world_env_carries_every_setting_of_the_world():
    assert Settings.from_env(world_env(EVERYTHING_CHANGED)) == EVERYTHING_CHANGED
    # The reliability tests' short RPC timeout reached the tests' own settings but not the
    # processes they spawned: world_env left it out.
    assert world_env(Settings(rpc_timeout=3.0))["LEDGERDESK_RPC_TIMEOUT"] == "3.0"


@pytest.mark.parametrize("service", sorted(SERVICE_SECRETS))
def test_a_process_gets_back_its_settings_with_only_its_own_secrets(service: str):
    # Production refuses a day of another length and plain-HTTP webhooks.
    production = dataclasses.replace(
        EVERYTHING_CHANGED, environment="production", day_seconds=86400, webhook_allow_http=False
    )
    own = Settings.from_env(production.to_env(), service=service)
    env = own.to_env()

    assert {n for n in SECRET_FIELDS if f"LEDGERDESK_{n}" in env} == SERVICE_SECRETS[service]
    assert Settings.from_env(env, service=service) == own


def test_the_environment_has_one_variable_per_setting_and_every_secret_is_declared():
    names = [variable.variable for _, variable in declared()]
    assert len(names) == len(set(names))
    assert all(name.startswith("LEDGERDESK_") for name in names)
    assert set(Settings().to_env()) == set(names)
    assert frozenset(SECRET_FIELDS) == ALL_SECRETS
    for secrets in SERVICE_SECRETS.values():
        assert secrets <= ALL_SECRETS
