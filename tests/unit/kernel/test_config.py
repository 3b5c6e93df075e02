"""Unit tests for kernel.config: settings come from a mapping here, never from os.environ."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from psycopg2.extensions import parse_dsn

from kernel.config import (
    DEV_API_KEY_SECRET,
    DEV_MASTER_KEY,
    DEV_OPERATOR_TOKEN,
    ConfigurationError,
    Settings,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
B64_A = base64.b64encode(KEY_A).decode()
B64_B = base64.b64encode(KEY_B).decode()

PRODUCTION_SECRETS = {
    "LEDGERDESK_ENV": "production",
    "LEDGERDESK_MASTER_KEY": f"prod-2026:{B64_A}",
    "LEDGERDESK_API_KEY_SECRET": "Jq8vX2mR7tLw0pZ4nC6yH1kB9sD3fG5a",
    "LEDGERDESK_OPERATOR_TOKEN": "uE3rT7yW1qZ9xC5vB2nM8kL4jH6gF0dS",
    "LEDGERDESK_AUDIT_SIGNING_KEY": B64_B,
    "LEDGERDESK_SMTP_PASSWORD": "Rk7wQ2pZ9xL4vN1cT6yB3mH8jD5sF0gA",
    "LEDGERDESK_ATTACHMENT_S3_ACCESS_KEY_ID": "AKIA7QX2M4PZ9LKV3TNB",
    "LEDGERDESK_ATTACHMENT_S3_SECRET_ACCESS_KEY": "v8Lq2Xz7Pm4Kt9Rw1Bn6Cy3Hd5Gf0Js2Ua8Ek4Oi",
}


def test_an_empty_environment_gives_the_development_defaults():
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.environment == "development"
    assert settings.master_keys == {"dev-insecure": b"ledgerdesk-dev-insecure-master-k"}
    assert settings.current_master_key_id == "dev-insecure"
    assert settings.api_key_secret == DEV_API_KEY_SECRET
    assert settings.operator_token == DEV_OPERATOR_TOKEN
    assert settings.regions == ("uk", "in", "sg")
    assert settings.gateway_port == 8000
    assert settings.rpc_timeout == 10.0


def test_from_env_reads_only_the_given_mapping(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LEDGERDESK_GATEWAY_PORT", "9999")

    assert Settings.from_env({}).gateway_port == 8000
    assert Settings.from_env({"LEDGERDESK_GATEWAY_PORT": "8123"}).gateway_port == 8123


def test_every_setting_is_read_from_its_variable():
    settings = Settings.from_env(
        {
            "LEDGERDESK_ENV": "test",
            "LEDGERDESK_AMQP_URI": "amqp://u:p@rabbit:5672/ld",
            "LEDGERDESK_RABBIT_MANAGEMENT_URL": "http://u:p@rabbit:15672",
            "LEDGERDESK_DATABASE_URL": "postgresql://u:p@db:5433/postgres",
            "LEDGERDESK_DATABASE_PREFIX": "ld_test",
            "LEDGERDESK_MASTER_KEY": f"k1:{B64_A}",
            "LEDGERDESK_API_KEY_SECRET": "s3cret",
            "LEDGERDESK_OPERATOR_TOKEN": "op",
            "LEDGERDESK_GATEWAY_HOST": "0.0.0.0",
            "LEDGERDESK_GATEWAY_PORT": "8080",
            "LEDGERDESK_RPC_TIMEOUT": "2.5",
            "LEDGERDESK_DELIVERY_LIMIT": "3",
            "LEDGERDESK_DEAD_LETTER_TTL_HOURS": "0.5",
            "LEDGERDESK_DEAD_LETTER_MAX_MESSAGES": "20",
            "LEDGERDESK_MAX_WORKERS": "4",
            "LEDGERDESK_REGIONS": "uk,us",
            "LEDGERDESK_POLICY_VERSION": "2027-01",
            "LEDGERDESK_TRACES": "otlp",
            "LEDGERDESK_RELAY_BATCH_SIZE": "50",
            "LEDGERDESK_KEY_CACHE_SECONDS": "0.5",
        }
    )

    assert settings == Settings(
        environment="test",
        amqp_uri="amqp://u:p@rabbit:5672/ld",
        rabbit_management_url="http://u:p@rabbit:15672",
        database_url="postgresql://u:p@db:5433/postgres",
        database_prefix="ld_test",
        master_keys={"k1": KEY_A},
        api_key_secret="s3cret",
        operator_token="op",
        gateway_host="0.0.0.0",
        gateway_port=8080,
        rpc_timeout=2.5,
        delivery_limit=3,
        dead_letter_ttl_hours=0.5,
        dead_letter_max_messages=20,
        max_workers=4,
        regions=("uk", "us"),
        policy_version="2027-01",
        traces_exporter="otlp",
        relay_batch_size=50,
        key_cache_seconds=0.5,
    )
    assert isinstance(settings.gateway_port, int)
    assert isinstance(settings.rpc_timeout, float)


def test_regions_are_trimmed_and_empty_entries_dropped():
    assert Settings.from_env({"LEDGERDESK_REGIONS": " uk , ,sg ,"}).regions == ("uk", "sg")


# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("GATEWAY_PORT", "eighty"),
        ("GATEWAY_PORT", "80.5"),
        ("GATEWAY_PORT", ""),
        ("DELIVERY_LIMIT", "5x"),
        ("MAX_WORKERS", "ten"),
        ("RELAY_BATCH_SIZE", "1e3"),
        ("RPC_TIMEOUT", "soon"),
        ("KEY_CACHE_SECONDS", "30s"),
        ("DEAD_LETTER_TTL_HOURS", "2d"),
        ("DEAD_LETTER_MAX_MESSAGES", "1e4"),
    ],
)
def test_a_non_number_names_the_variable(name: str, raw: str):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({f"LEDGERDESK_{name}": raw})

    assert str(info.value) == f"LEDGERDESK_{name} must be a number, not {raw!r}"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("GATEWAY_PORT", "0"),
        ("DELIVERY_LIMIT", "-1"),
        ("MAX_WORKERS", "0"),
        ("RELAY_BATCH_SIZE", "-200"),
        ("RPC_TIMEOUT", "0.0"),
        ("KEY_CACHE_SECONDS", "-0.1"),
        ("DEAD_LETTER_TTL_HOURS", "0"),
        ("DEAD_LETTER_MAX_MESSAGES", "0"),
    ],
)
def test_a_number_must_be_positive(name: str, raw: str):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({f"LEDGERDESK_{name}": raw})

    assert str(info.value) == f"LEDGERDESK_{name} must be positive"


@pytest.mark.parametrize("raw", ["1", "3", "601"])
def test_a_heartbeat_the_broker_would_not_keep_is_refused(raw: str):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"LEDGERDESK_HEARTBEAT": raw})

    assert str(info.value) == "LEDGERDESK_HEARTBEAT must be 4-600 seconds"
    assert Settings.from_env({"LEDGERDESK_HEARTBEAT": "4"}).heartbeat == 4


@pytest.mark.parametrize("raw", ["0.0000001", "1193.1"])
def test_a_dead_letter_ttl_the_broker_cannot_take_is_refused(raw: str):
    with pytest.raises(ConfigurationError, match="LEDGERDESK_DEAD_LETTER_TTL_HOURS"):
        Settings.from_env({"LEDGERDESK_DEAD_LETTER_TTL_HOURS": raw})

    assert Settings.from_env({"LEDGERDESK_DEAD_LETTER_TTL_HOURS": "1193"}).dead_letter_ttl_hours


def test_a_nan_timeout_is_refused():
    with pytest.raises(ConfigurationError):
        Settings.from_env({"LEDGERDESK_RPC_TIMEOUT": "nan"})


# --- master keys -----------------------------------------------------------------------------


def test_master_keys_keep_their_order_and_the_first_is_current():
    settings = Settings.from_env({"LEDGERDESK_MASTER_KEY": f"new:{B64_B} , old:{B64_A} ,"})

    assert settings.master_keys == {"new": KEY_B, "old": KEY_A}
    assert list(settings.master_keys) == ["new", "old"]
    assert settings.current_master_key_id == "new"


def test_the_dev_master_key_parses_to_32_bytes():
    settings = Settings.from_env({"LEDGERDESK_MASTER_KEY": DEV_MASTER_KEY})

    assert len(settings.master_keys["dev-insecure"]) == 32


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("no-separator", "LEDGERDESK_MASTER_KEY entries must look like 'key_id:base64'"),
        (f":{B64_A}", "LEDGERDESK_MASTER_KEY entries must look like 'key_id:base64'"),
        (f"ok:{B64_A},broken", "LEDGERDESK_MASTER_KEY entries must look like 'key_id:base64'"),
        ("k1:not base64!", "LEDGERDESK_MASTER_KEY 'k1' is not base64"),
        (
            "k1:" + base64.b64encode(b"x" * 16).decode(),
            "LEDGERDESK_MASTER_KEY 'k1' must be 32 bytes",
        ),
        (
            "k1:" + base64.b64encode(b"x" * 33).decode(),
            "LEDGERDESK_MASTER_KEY 'k1' must be 32 bytes",
        ),
        ("k1:", "LEDGERDESK_MASTER_KEY 'k1' must be 32 bytes"),
        ("", "LEDGERDESK_MASTER_KEY is empty"),
        (", ,", "LEDGERDESK_MASTER_KEY is empty"),
    ],
)
def test_a_malformed_master_key_names_the_problem(raw: str, message: str):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"LEDGERDESK_MASTER_KEY": raw})

    assert str(info.value) == message


def test_a_malformed_master_key_message_does_not_leak_key_material():
    short = base64.b64encode(b"top-secret-bytes").decode()

    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"LEDGERDESK_MASTER_KEY": f"k1:{short}"})

    assert short not in str(info.value)


# --- production ------------------------------------------------------------------------------


def test_production_with_real_secrets_starts():
    settings = Settings.from_env(PRODUCTION_SECRETS)

    assert settings.environment == "production"
    assert settings.master_keys == {"prod-2026": KEY_A}


def test_production_refuses_all_development_secrets_and_names_them():
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"LEDGERDESK_ENV": "production"})

    assert str(info.value) == (
        "production refuses development secrets: set LEDGERDESK_MASTER_KEY, "
        "LEDGERDESK_API_KEY_SECRET, LEDGERDESK_OPERATOR_TOKEN, LEDGERDESK_AUDIT_SIGNING_KEY, "
        "LEDGERDESK_ATTACHMENT_S3_ACCESS_KEY_ID, LEDGERDESK_ATTACHMENT_S3_SECRET_ACCESS_KEY, "
        "LEDGERDESK_SMTP_PASSWORD"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MASTER_KEY", DEV_MASTER_KEY),
        ("MASTER_KEY", f"prod:{B64_A},{DEV_MASTER_KEY}"),
        ("API_KEY_SECRET", DEV_API_KEY_SECRET),
        ("OPERATOR_TOKEN", DEV_OPERATOR_TOKEN),
    ],
)
def test_production_refuses_each_development_secret(name: str, value: str):
    env = {**PRODUCTION_SECRETS, f"LEDGERDESK_{name}": value}

    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env)

    assert str(info.value) == f"production refuses development secrets: set LEDGERDESK_{name}"


@pytest.mark.parametrize(
    "name", ["MASTER_KEY", "API_KEY_SECRET", "OPERATOR_TOKEN", "AUDIT_SIGNING_KEY"]
)
def test_production_refuses_a_missing_secret_because_the_default_is_insecure(name: str):
    env = {k: v for k, v in PRODUCTION_SECRETS.items() if k != f"LEDGERDESK_{name}"}

    with pytest.raises(ConfigurationError, match=f"LEDGERDESK_{name}$"):
        Settings.from_env(env)


def test_a_day_is_a_day_unless_a_test_shortens_it_and_production_refuses_that():
    assert Settings.from_env({}).day_seconds == 86400
    assert Settings.from_env({"LEDGERDESK_DAY_SECONDS": "2"}).day_seconds == 2
    assert Settings.from_env({**PRODUCTION_SECRETS, "LEDGERDESK_DAY_SECONDS": "86400"})
    with pytest.raises(ConfigurationError, match="LEDGERDESK_DAY_SECONDS"):
        Settings.from_env({**PRODUCTION_SECRETS, "LEDGERDESK_DAY_SECONDS": "2"})
    with pytest.raises(ConfigurationError, match="LEDGERDESK_DAY_SECONDS must be"):
        Settings.from_env({"LEDGERDESK_DAY_SECONDS": "0"})


def test_webhook_guards_are_on_unless_switched_off_and_production_keeps_https():
    defaults = Settings.from_env({})
    assert (defaults.webhook_allow_http, defaults.webhook_allow_private) == (False, False)
    switched = Settings.from_env(
        {"LEDGERDESK_WEBHOOK_ALLOW_HTTP": "true", "LEDGERDESK_WEBHOOK_ALLOW_PRIVATE": "On"}
    )
    assert (switched.webhook_allow_http, switched.webhook_allow_private) == (True, True)
    off = Settings.from_env({"LEDGERDESK_WEBHOOK_ALLOW_PRIVATE": "0"})
    assert off.webhook_allow_private is False
    # A misspelling is refused, not read as either value.
    with pytest.raises(ConfigurationError, match="LEDGERDESK_WEBHOOK_ALLOW_PRIVATE must be true"):
        Settings.from_env({"LEDGERDESK_WEBHOOK_ALLOW_PRIVATE": "ture"})
    assert Settings.from_env({**PRODUCTION_SECRETS, "LEDGERDESK_WEBHOOK_ALLOW_PRIVATE": "true"})
    with pytest.raises(ConfigurationError, match="LEDGERDESK_WEBHOOK_ALLOW_HTTP"):
        Settings.from_env({**PRODUCTION_SECRETS, "LEDGERDESK_WEBHOOK_ALLOW_HTTP": "true"})


def test_development_accepts_development_secrets():
    assert Settings.from_env({"LEDGERDESK_ENV": "development"}).api_key_secret == (
        DEV_API_KEY_SECRET
    )


def test_production_refuses_the_development_key_material_under_another_id():
    dev_b64 = DEV_MASTER_KEY.partition(":")[2]
    env = {**PRODUCTION_SECRETS, "LEDGERDESK_MASTER_KEY": f"prod:{dev_b64}"}

    with pytest.raises(ConfigurationError):
        Settings.from_env(env)


def test_check_runs_again_on_a_constructed_settings():
    with pytest.raises(ConfigurationError, match="LEDGERDESK_API_KEY_SECRET"):
        Settings(environment="production", master_keys={"p": KEY_A}, operator_token="real").check()


# --- databases -------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["ledger-desk", "ledger desk", "", "ld;drop", 'ld"x'])
def test_a_database_prefix_outside_letters_digits_underscore_is_refused(prefix: str):
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"LEDGERDESK_DATABASE_PREFIX": prefix})

    assert str(info.value) == "LEDGERDESK_DATABASE_PREFIX may hold letters, digits and _ only"


def test_database_names():
    settings = Settings.from_env({"LEDGERDESK_DATABASE_PREFIX": "ld_ci"})

    assert settings.database_name("accounts") == "ld_ci_accounts"
    assert settings.database_name("accounts", "keys") == "ld_ci_accounts_keys"


def test_database_dsn_keeps_the_server_and_swaps_the_database():
    settings = Settings.from_env(
        {
            "LEDGERDESK_DATABASE_URL": "postgresql://alice:pw@db.internal:5433/postgres?sslmode=require"
        }
    )

    assert parse_dsn(settings.database_dsn("tickets", "keys")) == {
        "user": "alice",
        "password": "pw",
        "host": "db.internal",
        "port": "5433",
        "dbname": "ledgerdesk_tickets_keys",
        "sslmode": "require",
    }
    assert parse_dsn(settings.database_dsn("tickets"))["dbname"] == "ledgerdesk_tickets"


def test_database_dsn_from_the_default_url():
    assert parse_dsn(Settings().database_dsn("accounts")) == {
        "user": "postgres",
        "host": "127.0.0.1",
        "port": "5432",
        "dbname": "ledgerdesk_accounts",
    }


# --- nameko ----------------------------------------------------------------------------------


def test_nameko_config():
    settings = Settings.from_env(
        {
            "LEDGERDESK_AMQP_URI": "amqp://u:p@rabbit:5672/vh",
            "LEDGERDESK_GATEWAY_HOST": "0.0.0.0",
            "LEDGERDESK_GATEWAY_PORT": "8081",
            "LEDGERDESK_MAX_WORKERS": "3",
            "LEDGERDESK_HEARTBEAT": "7",
        }
    )

    config = settings.nameko_config()

    assert config == {
        "AMQP_URI": "amqp://u:p@rabbit:5672/vh",
        "AMQP_SSL": None,
        "WEB_SERVER_ADDRESS": "0.0.0.0:8081",
        "max_workers": 3,
        "serializer": "json",
        "HEARTBEAT": 7,
        "LEDGERDESK": settings,
    }
    assert config["LEDGERDESK"] is settings


def test_ops_port_may_be_zero_for_any_and_log_format_is_json_or_text():
    assert Settings.from_env({}).ops_port == 9100
    assert Settings.from_env({"LEDGERDESK_OPS_PORT": "0"}).ops_port == 0
    assert Settings.from_env({"LEDGERDESK_LOG_FORMAT": "TEXT"}).log_format == "text"
    for name, value in (("OPS_PORT", "-1"), ("OPS_PORT", "70000"), ("LOG_FORMAT", "xml")):
        with pytest.raises(ConfigurationError, match=f"LEDGERDESK_{name}"):
            Settings.from_env({f"LEDGERDESK_{name}": value})


def test_log_level_is_one_of_loggings_levels_in_any_case_and_info_by_default():
    assert Settings.from_env({}).log_level == "info"
    assert Settings.from_env({"LEDGERDESK_LOG_LEVEL": " Warning "}).log_level == "warning"
    assert Settings.from_env({"LEDGERDESK_LOG_LEVEL": "DEBUG"}).log_level == "debug"
    for value in ("verbose", "critical", "10", ""):
        with pytest.raises(ConfigurationError, match="LEDGERDESK_LOG_LEVEL must be one of"):
            Settings.from_env({"LEDGERDESK_LOG_LEVEL": value})


def test_with_overrides_returns_a_changed_copy():
    settings = Settings()

    changed = settings.with_overrides(gateway_port=9000, regions=("uk",))

    assert (changed.gateway_port, changed.regions) == (9000, ("uk",))
    assert (settings.gateway_port, settings.regions) == (8000, ("uk", "in", "sg"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.gateway_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "refusal"),
    [
        ({"LEDGERDESK_ATTACHMENT_STORE": "disk"}, "must be database or s3"),
        ({"LEDGERDESK_ATTACHMENT_STORE": "s3"}, "needs LEDGERDESK_ATTACHMENT_S3_BUCKET"),
        (
            {
                "LEDGERDESK_ATTACHMENT_S3_ACCESS_KEY_ID": "",
                "LEDGERDESK_ATTACHMENT_STORE": "s3",
                "LEDGERDESK_ATTACHMENT_S3_BUCKET": "files",
            },
            "go together",
        ),
    ],
)
def test_the_attachment_store_settings_are_checked(env, refusal):
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(env)
    assert refusal in str(refused.value)


def test_the_object_store_keys_may_be_empty_in_production_but_never_the_development_ones():
    both_empty = {
        **PRODUCTION_SECRETS,
        "LEDGERDESK_ATTACHMENT_STORE": "s3",
        "LEDGERDESK_ATTACHMENT_S3_BUCKET": "files",
        "LEDGERDESK_ATTACHMENT_S3_ACCESS_KEY_ID": "",
        "LEDGERDESK_ATTACHMENT_S3_SECRET_ACCESS_KEY": "",
    }
    settings = Settings.from_env(both_empty, service="tickets")
    assert settings.attachment_s3_access_key_id == "" and settings.attachment_store == "s3"
    dev = {**PRODUCTION_SECRETS}
    del dev["LEDGERDESK_ATTACHMENT_S3_SECRET_ACCESS_KEY"]
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(dev, service="tickets")
    assert str(refused.value) == (
        "production refuses development secrets: set LEDGERDESK_ATTACHMENT_S3_SECRET_ACCESS_KEY"
    )
