"""Secrets at start: used as given (whitespace around one is refused, nothing is stripped), in
production long and varied enough to be random and no development value in any spelling, and
never shown: not in a repr, nor in the message or traceback of a refusal."""

from __future__ import annotations

import base64
import traceback

import pytest

from kernel.config import (
    DEV_AUDIT_SIGNING_KEY,
    DEV_MASTER_KEY,
    DEV_OPERATOR_TOKEN,
    ConfigurationError,
    Settings,
)
from kernel.signing import signer_from_config

KEY_A = bytes(range(32))
B64_A = base64.b64encode(KEY_A).decode()
B64_B = base64.b64encode(bytes(range(100, 132))).decode()
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

SECRETS = ("MASTER_KEY", "API_KEY_SECRET", "OPERATOR_TOKEN", "AUDIT_SIGNING_KEY")


STRONG_TOKEN = PRODUCTION_SECRETS["LEDGERDESK_OPERATOR_TOKEN"]
DEV_SEED_BYTES = base64.b64decode(DEV_AUDIT_SIGNING_KEY)


def _production(**secrets: str) -> dict[str, str]:
    return {**PRODUCTION_SECRETS, **{f"LEDGERDESK_{k}": v for k, v in secrets.items()}}


def _refusal(env: dict[str, str]) -> str:
    """The message ``env`` is refused with, checked to quote none of the secrets in it, in its
    text or its whole traceback."""
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env)
    shown = "".join(traceback.format_exception(info.value))
    for name in SECRETS:
        value = env.get(f"LEDGERDESK_{name}", "")
        for part in filter(None, (value.strip(), *value.split(":"))):
            if len(part) >= 8:
                assert part not in shown, f"the message quotes LEDGERDESK_{name}"
    return str(info.value)


@pytest.mark.parametrize("token", ["", "short-but-random-7Hq2", STRONG_TOKEN[:31]])
def test_production_refuses_an_operator_token_below_the_minimum(token: str):
    message = _refusal(_production(OPERATOR_TOKEN=token))

    assert message.startswith("production needs LEDGERDESK_OPERATOR_TOKEN of at least 32")
    assert Settings.from_env(_production(OPERATOR_TOKEN=STRONG_TOKEN[:32])).operator_token


@pytest.mark.parametrize("secret", ["", "s3cret", "Jq8vX2mR7tLw0pZ4nC6yH1kB9sD3fG5"])
def test_production_refuses_an_api_key_secret_below_the_minimum(secret: str):
    message = _refusal(_production(API_KEY_SECRET=secret))

    assert message.startswith("production needs LEDGERDESK_API_KEY_SECRET of at least 32")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPERATOR_TOKEN", "a" * 40),
        ("API_KEY_SECRET", "passwordpassword" * 3),
        ("MASTER_KEY", "k1:" + base64.b64encode(bytes(32)).decode()),
        ("MASTER_KEY", f"k1:{B64_A},k0:" + base64.b64encode(b"ab" * 16).decode()),
        ("AUDIT_SIGNING_KEY", base64.b64encode(b"\x07" * 32).decode()),
    ],
)
def test_production_refuses_a_secret_that_repeats_a_few_characters(name: str, value: str):
    message = _refusal(_production(**{name: value}))

    assert f"LEDGERDESK_{name}" in message and "not random" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPERATOR_TOKEN", DEV_OPERATOR_TOKEN.upper() + "-0123456789"),
        ("OPERATOR_TOKEN", "x" + DEV_OPERATOR_TOKEN.replace("-", "_") + "-made-long-enough"),
        ("API_KEY_SECRET", "Dev Insecure API key secret, padded to length"),
        ("MASTER_KEY", "prod:" + DEV_MASTER_KEY.partition(":")[2]),
        ("MASTER_KEY", f"DEV_INSECURE:{B64_A}"),
        # The same 32 bytes, spelt with the two unused low bits of base64's last digit set.
        ("AUDIT_SIGNING_KEY", DEV_AUDIT_SIGNING_KEY[:-2] + "H="),
        ("AUDIT_SIGNING_KEY", base64.b64encode(b"another-dev-insecure-seed-32-by!").decode()),
    ],
)
def test_production_refuses_development_secrets_in_any_spelling(name: str, value: str):
    if name == "AUDIT_SIGNING_KEY" and value.endswith("H="):
        assert base64.b64decode(value, validate=True) == DEV_SEED_BYTES

    assert _refusal(_production(**{name: value})) == (
        f"production refuses development secrets: set LEDGERDESK_{name}"
    )


@pytest.mark.parametrize("environment", ["development", "production"])
@pytest.mark.parametrize("name", SECRETS)
@pytest.mark.parametrize("around", [(" ", ""), ("", "\n"), ("\t", "\r\n")])
def test_whitespace_around_a_secret_is_refused_in_every_environment(
    environment: str, name: str, around: tuple[str, str]
):
    value = PRODUCTION_SECRETS[f"LEDGERDESK_{name}"]
    env = {**PRODUCTION_SECRETS, "LEDGERDESK_ENV": environment}
    env[f"LEDGERDESK_{name}"] = around[0] + value + around[1]

    message = _refusal(env)

    assert message.startswith(f"LEDGERDESK_{name} has whitespace around it")


def test_the_development_seed_with_a_trailing_newline_does_not_pass_production():
    # Before: stripped by the signer, the seed passed production's check as "not the default".
    message = _refusal(_production(AUDIT_SIGNING_KEY=DEV_AUDIT_SIGNING_KEY + "\n"))

    assert message.startswith("LEDGERDESK_AUDIT_SIGNING_KEY has whitespace around it")
    with pytest.raises(ValueError, match="not valid base64"):
        signer_from_config(DEV_AUDIT_SIGNING_KEY + "\n")
    with pytest.raises(ValueError, match="not valid base64"):
        signer_from_config(" " + DEV_AUDIT_SIGNING_KEY)


@pytest.mark.parametrize(
    "seed",
    [
        "not base64 at all, and secret",
        base64.b64encode(b"thirty-one bytes of seed, secret")[:-4].decode(),
        base64.b64encode(b"thirty-three bytes of seed, secret!").decode(),
    ],
)
@pytest.mark.parametrize("environment", ["development", "production"])
def test_a_malformed_audit_seed_is_refused_at_start_without_quoting_it(seed: str, environment: str):
    env = _production(AUDIT_SIGNING_KEY=seed)
    env["LEDGERDESK_ENV"] = environment

    message = _refusal(env)

    assert message.startswith("LEDGERDESK_AUDIT_SIGNING_KEY must be base64")
    assert seed not in message


def test_a_master_key_that_is_not_base64_is_refused_without_quoting_it():
    key = "k1:" + "not*base64*but*secret*material*!"

    message = _refusal(_production(MASTER_KEY=key))

    assert message == "LEDGERDESK_MASTER_KEY 'k1' is not base64"


def test_no_secret_is_in_the_repr_or_str_of_settings_or_the_nameko_config():
    env = {
        **PRODUCTION_SECRETS,
        "LEDGERDESK_AMQP_URI": "amqp://ledgerdesk:broker-pass-4711@rabbit:5672/ld",
        "LEDGERDESK_RABBIT_MANAGEMENT_URL": "http://ledgerdesk:manage-pass-4711@rabbit:15672",
        "LEDGERDESK_DATABASE_URL": "postgresql://ledgerdesk:db-pass-4711@db:5432/postgres",
    }
    settings = Settings.from_env(env)
    secrets = [
        PRODUCTION_SECRETS["LEDGERDESK_API_KEY_SECRET"],
        PRODUCTION_SECRETS["LEDGERDESK_OPERATOR_TOKEN"],
        PRODUCTION_SECRETS["LEDGERDESK_AUDIT_SIGNING_KEY"],
        B64_A,
        repr(KEY_A),
        KEY_A.hex(),
        "broker-pass-4711",
        "manage-pass-4711",
        "db-pass-4711",
    ]

    for shown in (repr(settings), str(settings), f"{settings}"):
        for secret in secrets:
            assert secret not in shown
    # nameko's own AMQP_URI must carry the broker's password; the Settings beside it shows none.
    config = {k: v for k, v in settings.nameko_config().items() if k != "AMQP_URI"}
    for secret in secrets:
        assert secret not in repr(config)
    # Still a useful repr: where things are, and which secrets are held.
    assert "rabbit:5672" in repr(settings) and "db:5432" in repr(settings)
    assert "operator_token='***'" in repr(settings)
    assert "operator_token=''" in repr(settings.with_overrides(operator_token=""))
    keywords = settings.with_overrides(database_url="host=db user=ld password=kv-pass-4711")
    assert "kv-pass-4711" not in repr(keywords) and "host=db" in repr(keywords)


def test_the_dev_defaults_still_pass_development_and_the_signer_takes_them():
    settings = Settings.from_env({})

    assert signer_from_config(settings.audit_signing_key).public_key_b64
    assert settings.operator_token == DEV_OPERATOR_TOKEN


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AMQP_URI", "amqp://ledgerdesk-tickets:dev-insecure-tickets@rabbitmq:5672/"),
        ("AMQP_URI", "amqp://u:Strong-9f3k@a:5672/;amqp://u:DEV_INSECURE%2Dx@b:5672/"),
        ("DATABASE_URL", "postgresql://postgres:dev-insecure-postgres@postgres:5432/postgres"),
        ("DATABASE_URL", "host=postgres user=postgres password=dev-insecure-postgres"),
    ],
)
def test_production_refuses_development_connection_passwords(name: str, value: str):
    shown = _refusal(_production(**{name: value}))
    assert shown == f"production refuses development secrets: set LEDGERDESK_{name}"
    assert "insecure" not in shown.lower()


def test_production_takes_connection_passwords_that_are_not_development_ones():
    Settings.from_env(
        _production(
            AMQP_URI="amqp://ledgerdesk-tickets:Zr8q2LwX7p@rabbitmq:5672/",
            DATABASE_URL="postgresql://postgres:Xk4v9TqP2m@postgres:5432/postgres",
        )
    )


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        (
            f"in=dev-insecure:{B64_A}",
            "production refuses development secrets: set LEDGERDESK_CELL_MASTER_KEYS",
        ),
        (
            f"in=k1:{base64.b64encode(bytes(32)).decode()}",
            "production refuses"
            " LEDGERDESK_CELL_MASTER_KEYS 'in=k1': its bytes repeat, it is not random",
        ),
    ],
)
def test_production_refuses_a_cells_development_or_patterned_master_key(value: str, refusal: str):
    assert _refusal(_production(CELL_MASTER_KEYS=value)) == refusal


def test_production_refuses_the_management_apis_development_password():
    shown = _refusal(
        _production(RABBIT_MANAGEMENT_URL="http://admin:dev-insecure-admin@rabbitmq:15672")
    )
    assert shown == "production refuses development secrets: set LEDGERDESK_RABBIT_MANAGEMENT_URL"
