"""The checks a production deployment's secrets pass at start: set, not a development value in
any spelling, long and varied enough to be random. Messages name settings, never values."""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from typing import TYPE_CHECKING

from psycopg2.extensions import parse_dsn

from kernel.config_values import ConfigurationError

if TYPE_CHECKING:
    from kernel.config import Settings

# A bearer token or HMAC key typed by people: 32 characters of base64 are 192 bits, out of reach
# of guessing online (the operator token opens every tenant's audit log) or offline (the API-key
# secret keys the stored hashes of API keys).
MIN_SECRET_CHARS = 32
# Fewer distinct characters (or bytes) than these is a repeated pattern, not a random value:
# random base64 or hex of the minimum length has so few about once in a million draws or less.
_MIN_DISTINCT_CHARS = 8
_MIN_DISTINCT_KEY_BYTES = 16
_SEED_BYTES = 32


def looks_like_dev(value: str) -> bool:
    """Whether a secret is marked development in any spelling (case, ``-``, ``_``, spaces)."""
    return "devinsecure" in re.sub(r"[^a-z0-9]", "", value.lower())


def seed_bytes(value: str) -> bytes:
    """The audit signing seed as the signer reads it: base64 of exactly 32 bytes, nothing around
    it. The message never repeats the value."""
    try:
        seed = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(
            "LEDGERDESK_AUDIT_SIGNING_KEY must be base64 (of a 32-byte Ed25519 seed)"
        ) from None
    if len(seed) != _SEED_BYTES:
        raise ConfigurationError(
            f"LEDGERDESK_AUDIT_SIGNING_KEY must be base64 of {_SEED_BYTES} bytes,"
            f" not {len(seed)} bytes"
        )
    return seed


def _password_of_uri(uri: str) -> str:
    try:
        password = urllib.parse.urlsplit(uri.strip()).password
    except ValueError:
        return ""
    return urllib.parse.unquote(password or "")


def _password_of_dsn(dsn: str) -> str:
    try:
        return str(parse_dsn(dsn).get("password", ""))
    except Exception:  # a malformed DSN fails where it is used, with its own message
        return ""


def check_production_secrets(settings: Settings) -> None:
    """Every secret this process holds is set, not a development value in any spelling, and
    long and varied enough to be random. Messages name settings, never values."""
    held = settings.held_secrets
    cell_keys = {
        (f"{region}={kid}", key)
        for region, keys in settings.cell_master_keys.items()
        for kid, key in keys.items()
    }
    try:
        seed = seed_bytes(settings.audit_signing_key) if settings.audit_signing_key else b""
    except ConfigurationError:
        seed = b""  # refused below, after the development values
    development = {
        "MASTER_KEY": any(
            looks_like_dev(kid) or looks_like_dev(key.decode("latin-1"))
            for kid, key in settings.master_keys.items()
        ),
        # A cell's own master keys wrap its tenants' keys as LEDGERDESK_MASTER_KEY does.
        "CELL_MASTER_KEYS": any(
            looks_like_dev(kid) or looks_like_dev(key.decode("latin-1")) for kid, key in cell_keys
        ),
        "API_KEY_SECRET": looks_like_dev(settings.api_key_secret),
        "OPERATOR_TOKEN": looks_like_dev(settings.operator_token),
        # Compared as bytes: every base64 spelling of the development seed is refused.
        "AUDIT_SIGNING_KEY": looks_like_dev(settings.audit_signing_key)
        or looks_like_dev(seed.decode("latin-1")),
        # The object store's keys may be empty (the SDK's own credentials), never a
        # development value.
        "ATTACHMENT_S3_ACCESS_KEY_ID": looks_like_dev(settings.attachment_s3_access_key_id),
        "ATTACHMENT_S3_SECRET_ACCESS_KEY": looks_like_dev(settings.attachment_s3_secret_access_key),
        # The relay's password is the relay's to choose, but never a development value.
        "SMTP_PASSWORD": looks_like_dev(settings.smtp_password),
    }
    # Every process holds its connections' passwords: compose's development broker users
    # (deploy/rabbitmq/dev-users.json) and database password must not reach production.
    connections = {
        "AMQP_URI": any(
            looks_like_dev(_password_of_uri(uri)) for uri in settings.amqp_uri.split(";")
        ),
        "DATABASE_URL": looks_like_dev(_password_of_dsn(settings.database_url)),
        "RABBIT_MANAGEMENT_URL": looks_like_dev(_password_of_uri(settings.rabbit_management_url)),
    }
    insecure = [name for name, dev in development.items() if name in held and dev]
    insecure += [name for name, dev in connections.items() if dev]
    if insecure:
        raise ConfigurationError(
            "production refuses development secrets: set "
            + ", ".join(f"LEDGERDESK_{n}" for n in insecure)
        )
    for name, value in (
        ("OPERATOR_TOKEN", settings.operator_token),
        ("API_KEY_SECRET", settings.api_key_secret),
    ):
        if name not in held:
            continue
        if len(value) < MIN_SECRET_CHARS:
            raise ConfigurationError(
                f"production needs LEDGERDESK_{name} of at least {MIN_SECRET_CHARS}"
                " characters: a shorter one can be guessed (e.g. head -c 32 /dev/urandom"
                " | base64)"
            )
        if len(set(value)) < _MIN_DISTINCT_CHARS:
            raise ConfigurationError(
                f"production refuses LEDGERDESK_{name}: it repeats a few characters,"
                " it is not random"
            )
    if "SMTP_PASSWORD" in held and not settings.smtp_password:
        raise ConfigurationError("production needs LEDGERDESK_SMTP_PASSWORD")
    if "MASTER_KEY" in held:
        if not settings.master_keys:
            raise ConfigurationError("production needs LEDGERDESK_MASTER_KEY")
        for kid, key in settings.master_keys.items():
            if len(set(key)) < _MIN_DISTINCT_KEY_BYTES:
                raise ConfigurationError(
                    f"production refuses LEDGERDESK_MASTER_KEY {kid!r}: its bytes repeat,"
                    " it is not random"
                )
    if "CELL_MASTER_KEYS" in held:
        for name, key in sorted(cell_keys):
            if len(set(key)) < _MIN_DISTINCT_KEY_BYTES:
                raise ConfigurationError(
                    f"production refuses LEDGERDESK_CELL_MASTER_KEYS {name!r}: its bytes repeat,"
                    " it is not random"
                )
    if "AUDIT_SIGNING_KEY" in held:
        if not settings.audit_signing_key:
            raise ConfigurationError("production needs LEDGERDESK_AUDIT_SIGNING_KEY")
        seed = seed_bytes(settings.audit_signing_key)
        if len(set(seed)) < _MIN_DISTINCT_KEY_BYTES:
            raise ConfigurationError(
                "production refuses LEDGERDESK_AUDIT_SIGNING_KEY: its bytes repeat,"
                " it is not random"
            )
