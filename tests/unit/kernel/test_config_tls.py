"""TLS settings: amqps:// turns on a verified connection (chain and name) with the client
certificate if configured; libpq's TLS parameters reach every DSN; what would silently fall
back to a connection in clear, or fail later deep in a library, is refused at start."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from psycopg2.extensions import parse_dsn

from kernel.config import ConfigurationError, Settings


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    # Contents do not matter here: the settings check only that the files can be read.
    names = {}
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("PEM")
        names[name] = str(tmp_path / name)
    return names


def test_amqp_without_tls_passes_no_ssl_options():
    settings = Settings.from_env({})

    assert settings.amqp_tls is False
    assert settings.amqp_ssl() is None
    assert settings.nameko_config()["AMQP_SSL"] is None
    assert settings.rpc_client_config() == {"AMQP_URI": settings.amqp_uri, "AMQP_SSL": None}


def test_amqps_verifies_the_brokers_chain_and_name_and_presents_the_client_certificate(files):
    settings = Settings.from_env(
        {
            "LEDGERDESK_AMQP_URI": "amqps://svc:pw@rabbit-1:5671/ld;amqps://svc:pw@rabbit-2:5671/ld",
            "LEDGERDESK_AMQP_CA_FILE": files["ca.pem"],
            "LEDGERDESK_AMQP_CERT_FILE": files["client.pem"],
            "LEDGERDESK_AMQP_KEY_FILE": files["client.key"],
        }
    )

    assert settings.amqp_ssl() == {
        "server_hostname": None,  # kombu puts the host it connects to here
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": files["ca.pem"],
        "certfile": files["client.pem"],
        "keyfile": files["client.key"],
    }
    # kombu writes into the dict it is given: each connection gets one of its own.
    assert settings.amqp_ssl() is not settings.amqp_ssl()
    assert settings.nameko_config()["AMQP_SSL"] == settings.amqp_ssl()
    assert settings.rpc_client_config()["AMQP_SSL"] == settings.amqp_ssl()


def test_amqps_without_files_verifies_against_the_systems_authorities():
    settings = Settings.from_env({"LEDGERDESK_AMQP_URI": "AMQPS://svc:pw@rabbit:5671/ld"})

    assert settings.amqp_ssl() == {"server_hostname": None, "cert_reqs": ssl.CERT_REQUIRED}


def test_tls_files_with_a_plain_amqp_uri_are_refused_rather_than_ignored(files):
    with pytest.raises(ConfigurationError, match="LEDGERDESK_AMQP_CA_FILE set but"):
        Settings.from_env({"LEDGERDESK_AMQP_CA_FILE": files["ca.pem"]})


def test_mixed_amqps_and_amqp_uris_are_refused():
    with pytest.raises(ConfigurationError, match="mixes amqps:// and amqp://"):
        Settings.from_env({"LEDGERDESK_AMQP_URI": "amqps://a:5671/;amqp://b:5672/"})


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ("LEDGERDESK_AMQP_CERT_FILE", "LEDGERDESK_AMQP_KEY_FILE"),
        ("LEDGERDESK_AMQP_KEY_FILE", "LEDGERDESK_AMQP_CERT_FILE"),
        ("LEDGERDESK_DATABASE_SSLCERT", "LEDGERDESK_DATABASE_SSLKEY"),
        ("LEDGERDESK_DATABASE_SSLKEY", "LEDGERDESK_DATABASE_SSLCERT"),
    ],
)
def test_a_certificate_without_its_key_or_a_key_without_its_certificate_is_refused(
    files, present: str, missing: str
):
    env = {"LEDGERDESK_AMQP_URI": "amqps://rabbit/", present: files["client.pem"]}
    with pytest.raises(ConfigurationError, match=f"{missing.rsplit('_', 2)[0]}"):
        Settings.from_env(env)


def test_an_unreadable_tls_file_is_named_at_start(tmp_path: Path):
    missing = str(tmp_path / "absent.pem")
    with pytest.raises(ConfigurationError, match=f"LEDGERDESK_DATABASE_SSLROOTCERT: {missing}"):
        Settings.from_env({"LEDGERDESK_DATABASE_SSLROOTCERT": missing})
    with pytest.raises(ConfigurationError, match=f"LEDGERDESK_AMQP_CA_FILE: {missing}"):
        Settings.from_env(
            {"LEDGERDESK_AMQP_URI": "amqps://rabbit/", "LEDGERDESK_AMQP_CA_FILE": missing}
        )


def test_an_unknown_sslmode_is_refused():
    with pytest.raises(ConfigurationError, match="LEDGERDESK_DATABASE_SSLMODE must be one of"):
        Settings.from_env({"LEDGERDESK_DATABASE_SSLMODE": "verify"})


def test_the_database_tls_settings_reach_every_dsn_and_take_precedence_over_the_url(files):
    settings = Settings.from_env(
        {
            "LEDGERDESK_DATABASE_URL": "postgresql://u:p@db.internal:5432/postgres?sslmode=require",
            "LEDGERDESK_DATABASE_SSLMODE": "Verify-Full",
            "LEDGERDESK_DATABASE_SSLROOTCERT": files["ca.pem"],
            "LEDGERDESK_DATABASE_SSLCERT": files["client.pem"],
            "LEDGERDESK_DATABASE_SSLKEY": files["client.key"],
        }
    )
    tls = {
        "sslmode": "verify-full",
        "sslrootcert": files["ca.pem"],
        "sslcert": files["client.pem"],
        "sslkey": files["client.key"],
    }

    assert parse_dsn(settings.server_dsn) == {
        "user": "u",
        "password": "p",
        "host": "db.internal",
        "port": "5432",
        "dbname": "postgres",
        **tls,
    }
    assert parse_dsn(settings.database_dsn("tickets", "keys")) == {
        **parse_dsn(settings.server_dsn),
        "dbname": "ledgerdesk_tickets_keys",
    }


def test_without_database_tls_settings_the_url_decides():
    settings = Settings.from_env(
        {"LEDGERDESK_DATABASE_URL": "postgresql://u@db:5432/postgres?sslmode=verify-ca"}
    )

    assert parse_dsn(settings.server_dsn)["sslmode"] == "verify-ca"
    assert "sslrootcert" not in parse_dsn(settings.database_dsn("accounts"))


def test_the_settings_round_trip_through_the_environment(files):
    settings = Settings.from_env(
        {
            "LEDGERDESK_AMQP_URI": "amqps://svc:pw@rabbit:5671/ld",
            "LEDGERDESK_AMQP_CA_FILE": files["ca.pem"],
            "LEDGERDESK_DATABASE_SSLMODE": "verify-full",
        }
    )

    assert Settings.from_env(settings.to_env()) == settings
