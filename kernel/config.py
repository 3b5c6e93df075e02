"""Configuration from the environment, with defaults that work against local services.

Every setting has one name (``LEDGERDESK_*``). Development defaults for secrets are marked
``dev-insecure``; a deployment that sets ``LEDGERDESK_ENV=production`` refuses to start with them,
and with secrets too short or too uniform to be random.

A process reads only the secrets it uses (``SERVICE_SECRETS``); no message, log line or repr
shows a secret's value.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

from psycopg2.extensions import make_dsn, parse_dsn

from kernel.signed_note import NoteError, PublicKey, check_key_name, parse_key_list

DEV_MASTER_KEY = "dev-insecure:" + base64.b64encode(b"ledgerdesk-dev-insecure-master-k").decode()
_DEV_KEY_BYTES = b"ledgerdesk-dev-insecure-master-k"
DEV_API_KEY_SECRET = "dev-insecure-api-key-secret"
DEV_OPERATOR_TOKEN = "dev-insecure-operator-token"
# An Ed25519 seed (32 bytes, base64) for the audit ledger's checkpoint signatures.
DEV_AUDIT_SIGNING_KEY = base64.b64encode(b"ledgerdesk-dev-insecure-audit-k!").decode()


# Every secret setting, by the name after ``LEDGERDESK_``, and its field of Settings.
SECRET_FIELDS: dict[str, str] = {
    "MASTER_KEY": "master_keys",
    "API_KEY_SECRET": "api_key_secret",
    "OPERATOR_TOKEN": "operator_token",
    "AUDIT_SIGNING_KEY": "audit_signing_key",
}
ALL_SECRETS: frozenset[str] = frozenset(SECRET_FIELDS)

# The secrets each process uses, and the only ones it reads from the environment: a secret it
# does not use is blank in production (so a use would fail loudly rather than fall back to a
# public development value) and its development value otherwise. Production checks only these;
# docker-compose.yml and deploy/kubernetes give each process exactly these.
SERVICE_SECRETS: dict[str, frozenset[str]] = {
    "accounts": frozenset({"MASTER_KEY", "API_KEY_SECRET"}),
    "tickets": frozenset({"MASTER_KEY"}),
    "billing": frozenset({"MASTER_KEY"}),
    "audit": frozenset({"MASTER_KEY", "AUDIT_SIGNING_KEY"}),
    # Erasure receipts are signed with the audit key, as the ledger's checkpoints are.
    "retention": frozenset({"MASTER_KEY", "AUDIT_SIGNING_KEY"}),
    # Not the audit seed: the public key it publishes is configured (LEDGERDESK_AUDIT_PUBLIC_KEYS).
    "gateway": frozenset({"MASTER_KEY", "OPERATOR_TOKEN"}),
    # Creating databases and declaring the broker's topology (and the operators' dead-letter
    # and relay tools) take the connection settings only.
    "prepare": frozenset(),
}

# A bearer token or HMAC key typed by people: 32 characters of base64 are 192 bits, out of reach
# of guessing online (the operator token opens every tenant's audit log) or offline (the API-key
# secret keys the stored hashes of API keys).
MIN_SECRET_CHARS = 32
# Fewer distinct characters (or bytes) than these is a repeated pattern, not a random value:
# random base64 or hex of the minimum length has so few about once in a million draws or less.
_MIN_DISTINCT_CHARS = 8
_MIN_DISTINCT_KEY_BYTES = 16
_SEED_BYTES = 32


ENVIRONMENTS = frozenset({"development", "test", "production"})


class ConfigurationError(Exception):
    """A setting is missing or malformed; the message names the variable, never a secret's value."""


def _looks_like_dev(value: str) -> bool:
    """Whether a secret is marked development in any spelling (case, ``-``, ``_``, spaces)."""
    return "devinsecure" in re.sub(r"[^a-z0-9]", "", value.lower())


def _seed_bytes(value: str) -> bytes:
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


def _masked_url(url: str) -> str:
    """A URL or DSN with its password replaced, for a repr."""
    if "://" not in url:  # a libpq "key=value" DSN
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _parse_audit_public_keys(raw: str, origin: str) -> tuple[PublicKey, ...] | None:
    """``LEDGERDESK_AUDIT_PUBLIC_KEYS``: None when unset (development derives the key from the
    signing seed); else a JSON array of {public_key, valid_from, valid_until} (see
    ``kernel.signed_note.parse_key_list``)."""
    if not raw.strip():
        return None
    try:
        return parse_key_list(raw, origin)
    except NoteError as exc:
        raise ConfigurationError(f"LEDGERDESK_AUDIT_PUBLIC_KEYS: {exc}") from exc


def _parse_master_keys(raw: str) -> dict[str, bytes]:
    """``kid:base64[,kid:base64...]``: the first key wraps new keys, the others still unwrap."""
    keys: dict[str, bytes] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        kid, sep, b64 = part.partition(":")
        if not sep or not kid:
            raise ConfigurationError("LEDGERDESK_MASTER_KEY entries must look like 'key_id:base64'")
        try:
            key = base64.b64decode(b64, validate=True)
        except ValueError:
            # Not chained: the decoder's error could quote the key material.
            raise ConfigurationError(f"LEDGERDESK_MASTER_KEY {kid!r} is not base64") from None
        if len(key) != 32:
            raise ConfigurationError(f"LEDGERDESK_MASTER_KEY {kid!r} must be 32 bytes")
        keys[kid] = key
    if not keys:
        raise ConfigurationError("LEDGERDESK_MASTER_KEY is empty")
    return keys


def _parse_networks(raw: str) -> tuple[str, ...]:
    """Comma-separated CIDRs (a bare address is its /32 or /128), normalised."""
    networks = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            networks.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ConfigurationError(
                f"LEDGERDESK_TRUSTED_PROXIES: {part!r} is not an IP network (CIDR)"
            ) from None
    return tuple(networks)


@dataclass(frozen=True)
class Settings:
    environment: str = "development"
    amqp_uri: str = "amqp://guest:guest@127.0.0.1:5672/"
    rabbit_management_url: str = "http://guest:guest@127.0.0.1:15672"
    # The server-level DSN; each service's databases are derived from it by name.
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    database_prefix: str = "ledgerdesk"
    master_keys: dict[str, bytes] = field(
        default_factory=lambda: _parse_master_keys(DEV_MASTER_KEY)
    )
    api_key_secret: str = DEV_API_KEY_SECRET
    operator_token: str = DEV_OPERATOR_TOKEN
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    gateway_processes: int = 2
    rpc_timeout: float = 10.0
    delivery_limit: int = 5
    # How long a dead letter waits in a dead-letter queue (``<queue>.dead``, ``rpc-<s>.dead``)
    # for an operator before the broker drops it. audit.ledger.dead can hold access events with
    # their IP address and user agent in plaintext, outside the audit keys that end them, and a
    # tenant may shorten its access-log period to one day: two days keep such a copy within a
    # day of the shortest period, and still give an operator, alerted by the
    # ``ledgerdesk_dead_letters`` gauge, two days to mend the cause and replay.
    dead_letter_ttl_hours: float = 48.0
    # Past this many messages a dead-letter queue drops its oldest: a flood of failures cannot
    # fill the broker's memory and disk (whose alarms block every publisher of the platform).
    dead_letter_max_messages: int = 10_000
    max_workers: int = 10
    regions: tuple[str, ...] = ("uk", "in", "sg")
    policy_version: str = "2026-01"
    traces_exporter: str = "none"
    relay_batch_size: int = 200
    key_cache_seconds: float = 30.0
    grace_days: float = 21.0
    audit_signing_key: str = DEV_AUDIT_SIGNING_KEY
    # The public keys that may sign the ledger's checkpoints, each with its validity period;
    # None (unset): development derives the one key from the seed, valid since the epoch.
    audit_public_keys: tuple[PublicKey, ...] | None = None
    # The checkpoints' origin line and key name; empty: "ledgerdesk.audit/<database prefix>".
    audit_log_origin: str = ""
    checkpoint_seconds: float = 60.0
    schedule_seconds: float = 60.0
    # A data-subject request not answered by every service within this turns failed (alert).
    privacy_deadline_days: float = 30.0
    # The first re-send of a command a service has not (or not successfully) answered; each
    # further one waits twice as long, up to a day.
    privacy_retry_seconds: float = 300.0
    # The length of the "day" retention periods (access log, closed tickets) are counted in,
    # and of the access log's key buckets: a test makes it seconds long, production refuses that.
    day_seconds: int = 86400
    rate_limit: float = 50.0  # requests per second per API key, sustained
    rate_burst: int = 100
    # The networks of the proxies (load balancers) whose X-Forwarded-For / Forwarded headers
    # say who the client is (gateway.clientaddr); none by default: the socket peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    # Per client address and gateway process, before anything else is done with a request:
    # generous, since one address may be a whole office behind NAT.
    client_rate_limit: float = 100.0
    client_rate_burst: int = 200
    # Refused credentials per client address: past the burst, 429 without asking accounts.
    auth_failure_rate_limit: float = 0.1
    auth_failure_burst: int = 10
    # Sign-ups per client address: three at once, then one every ten minutes.
    signup_rate_limit: float = 1 / 600
    signup_burst: int = 3
    # Unauthenticated requests written to the access log one by one, per gateway process and
    # interval; the rest are counted into one access_summarized event per interval.
    unauthenticated_log_limit: int = 60
    unauthenticated_log_seconds: float = 60.0
    # Every process serves /healthz, /readyz and /metrics here; 0 picks a free port.
    ops_host: str = "0.0.0.0"
    ops_port: int = 9100
    # AMQP heartbeats (seconds): a dead broker connection is noticed within about twice this.
    heartbeat: int = 10
    log_format: str = "json"
    # The secrets this process holds (names after LEDGERDESK_): see SERVICE_SECRETS.
    held_secrets: frozenset[str] = ALL_SECRETS

    def __repr__(self) -> str:
        # A Settings ends up in nameko's config, and so in tracebacks and debug output: secrets
        # are shown as held or not, and URLs without their passwords.
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS.values():
                text = "'***'" if value else "''"
            elif f.name in ("amqp_uri", "rabbit_management_url", "database_url"):
                text = repr(_masked_url(value))
            else:
                text = repr(value)
            shown.append(f"{f.name}={text}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, service: str | None = None) -> Settings:
        """Settings from ``env`` (the process environment by default) for ``service``: only the
        secrets it uses (``SERVICE_SECRETS``) are read, and checked. Without ``service``, every
        secret is (the local launcher, which hands them on to each process, and tests)."""
        env = os.environ if env is None else env
        base = cls()
        environment = env.get("LEDGERDESK_ENV", base.environment).strip().lower()
        # A closed set: "prod" or "produciton" would otherwise run on every development secret.
        if environment not in ENVIRONMENTS:
            raise ConfigurationError(
                "LEDGERDESK_ENV must be one of " + ", ".join(sorted(ENVIRONMENTS))
            )
        if service is None:
            held = ALL_SECRETS
        elif service in SERVICE_SECRETS:
            held = SERVICE_SECRETS[service]
        elif environment == "production":
            raise ConfigurationError(
                f"no secrets are declared for the service {service!r}"
                " (kernel.config.SERVICE_SECRETS)"
            )
        else:
            held = frozenset()

        def get(name: str, default: str) -> str:
            return env.get(f"LEDGERDESK_{name}", default)

        def secret(name: str, default: str) -> str:
            """A secret as given: the consumer uses it byte for byte, so nothing is stripped,
            and whitespace around it (a newline left by a file) is refused rather than kept."""
            if name not in held:
                return "" if environment == "production" else default
            value = get(name, default)
            if value != value.strip():
                raise ConfigurationError(
                    f"LEDGERDESK_{name} has whitespace around it (a newline from a file?):"
                    " remove it"
                )
            return value

        master_key = secret("MASTER_KEY", DEV_MASTER_KEY)

        def number(name: str, default: float, kind: type = int):
            raw = get(name, str(default))
            try:
                value = kind(raw)
            except ValueError as exc:
                raise ConfigurationError(
                    f"LEDGERDESK_{name} must be a number, not {raw!r}"
                ) from exc
            if not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"LEDGERDESK_{name} must be positive")
            return value

        def port(name: str, default: int) -> int:
            raw = get(name, str(default)).strip() or "0"
            if not raw.isdigit() or int(raw) > 65535:
                raise ConfigurationError(f"LEDGERDESK_{name} must be a TCP port, or 0 for any")
            return int(raw)

        origin = get("AUDIT_LOG_ORIGIN", base.audit_log_origin).strip()
        settings = cls(
            environment=environment,
            amqp_uri=get("AMQP_URI", base.amqp_uri),
            rabbit_management_url=get("RABBIT_MANAGEMENT_URL", base.rabbit_management_url),
            database_url=get("DATABASE_URL", base.database_url),
            database_prefix=get("DATABASE_PREFIX", base.database_prefix),
            master_keys=_parse_master_keys(master_key)
            if master_key or "MASTER_KEY" in held
            else {},
            api_key_secret=secret("API_KEY_SECRET", base.api_key_secret),
            operator_token=secret("OPERATOR_TOKEN", base.operator_token),
            gateway_host=get("GATEWAY_HOST", base.gateway_host),
            gateway_port=number("GATEWAY_PORT", base.gateway_port),
            gateway_processes=number("GATEWAY_PROCESSES", base.gateway_processes),
            rpc_timeout=number("RPC_TIMEOUT", base.rpc_timeout, float),
            delivery_limit=number("DELIVERY_LIMIT", base.delivery_limit),
            dead_letter_ttl_hours=number(
                "DEAD_LETTER_TTL_HOURS", base.dead_letter_ttl_hours, float
            ),
            dead_letter_max_messages=number(
                "DEAD_LETTER_MAX_MESSAGES", base.dead_letter_max_messages
            ),
            max_workers=number("MAX_WORKERS", base.max_workers),
            regions=tuple(
                r.strip() for r in get("REGIONS", ",".join(base.regions)).split(",") if r.strip()
            ),
            policy_version=get("POLICY_VERSION", base.policy_version),
            traces_exporter=get("TRACES", base.traces_exporter),
            relay_batch_size=number("RELAY_BATCH_SIZE", base.relay_batch_size),
            key_cache_seconds=number("KEY_CACHE_SECONDS", base.key_cache_seconds, float),
            grace_days=number("GRACE_DAYS", base.grace_days, float),
            audit_signing_key=secret("AUDIT_SIGNING_KEY", base.audit_signing_key),
            audit_log_origin=origin,
            audit_public_keys=_parse_audit_public_keys(
                get("AUDIT_PUBLIC_KEYS", ""),
                origin or cls.default_audit_origin(get("DATABASE_PREFIX", base.database_prefix)),
            ),
            checkpoint_seconds=number("CHECKPOINT_SECONDS", base.checkpoint_seconds, float),
            schedule_seconds=number("SCHEDULE_SECONDS", base.schedule_seconds, float),
            privacy_deadline_days=number(
                "PRIVACY_DEADLINE_DAYS", base.privacy_deadline_days, float
            ),
            privacy_retry_seconds=number(
                "PRIVACY_RETRY_SECONDS", base.privacy_retry_seconds, float
            ),
            day_seconds=number("DAY_SECONDS", base.day_seconds),
            rate_limit=number("RATE_LIMIT", base.rate_limit, float),
            rate_burst=number("RATE_BURST", base.rate_burst),
            trusted_proxies=_parse_networks(get("TRUSTED_PROXIES", "")),
            client_rate_limit=number("CLIENT_RATE_LIMIT", base.client_rate_limit, float),
            client_rate_burst=number("CLIENT_RATE_BURST", base.client_rate_burst),
            auth_failure_rate_limit=number(
                "AUTH_FAILURE_RATE_LIMIT", base.auth_failure_rate_limit, float
            ),
            auth_failure_burst=number("AUTH_FAILURE_BURST", base.auth_failure_burst),
            signup_rate_limit=number("SIGNUP_RATE_LIMIT", base.signup_rate_limit, float),
            signup_burst=number("SIGNUP_BURST", base.signup_burst),
            unauthenticated_log_limit=number(
                "UNAUTHENTICATED_LOG_LIMIT", base.unauthenticated_log_limit
            ),
            unauthenticated_log_seconds=number(
                "UNAUTHENTICATED_LOG_SECONDS", base.unauthenticated_log_seconds, float
            ),
            ops_host=get("OPS_HOST", base.ops_host),
            ops_port=port("OPS_PORT", base.ops_port),
            heartbeat=number("HEARTBEAT", base.heartbeat),
            log_format=get("LOG_FORMAT", base.log_format).strip().lower(),
            held_secrets=held,
        )
        settings.check()
        return settings

    def check(self) -> None:
        if not 0 < self.gateway_port < 65536:
            raise ConfigurationError("LEDGERDESK_GATEWAY_PORT must be a TCP port (1-65535)")
        if self.log_format not in ("json", "text"):
            raise ConfigurationError("LEDGERDESK_LOG_FORMAT must be json or text")
        # Below 4 s the broker drops consumers: kombu's loop beats only when its 1 s wait ends.
        if not 4 <= self.heartbeat <= 600:
            raise ConfigurationError("LEDGERDESK_HEARTBEAT must be 4-600 seconds")
        # RabbitMQ takes a message TTL in whole milliseconds, as an unsigned 32-bit number.
        if not 1 <= round(self.dead_letter_ttl_hours * 3_600_000) < 2**32:
            raise ConfigurationError(
                "LEDGERDESK_DEAD_LETTER_TTL_HOURS must be between a millisecond and 1193 hours"
            )
        if not self.regions:
            raise ConfigurationError("LEDGERDESK_REGIONS must name at least one region")
        if not self.database_prefix.replace("_", "").isalnum():
            raise ConfigurationError(
                "LEDGERDESK_DATABASE_PREFIX may hold letters, digits and _ only"
            )
        try:
            check_key_name(self.audit_origin)
        except NoteError as exc:
            raise ConfigurationError(f"LEDGERDESK_AUDIT_LOG_ORIGIN: {exc}") from exc
        if self.environment == "production" and self.day_seconds != Settings.day_seconds:
            # A shorter day would shorten every retention period by the same factor.
            raise ConfigurationError("production refuses LEDGERDESK_DAY_SECONDS other than 86400")
        if self.environment == "production":
            self._check_production_secrets()
        if self.audit_signing_key:
            _seed_bytes(self.audit_signing_key)

    def _check_production_secrets(self) -> None:
        """Every secret this process holds is set, not a development value in any spelling, and
        long and varied enough to be random. Messages name settings, never values."""
        held = self.held_secrets
        try:
            seed = _seed_bytes(self.audit_signing_key) if self.audit_signing_key else b""
        except ConfigurationError:
            seed = b""  # refused below, after the development values
        development = {
            "MASTER_KEY": any(
                _looks_like_dev(kid) or _looks_like_dev(key.decode("latin-1"))
                for kid, key in self.master_keys.items()
            ),
            "API_KEY_SECRET": _looks_like_dev(self.api_key_secret),
            "OPERATOR_TOKEN": _looks_like_dev(self.operator_token),
            # Compared as bytes: every base64 spelling of the development seed is refused.
            "AUDIT_SIGNING_KEY": _looks_like_dev(self.audit_signing_key)
            or _looks_like_dev(seed.decode("latin-1")),
        }
        insecure = [name for name in SECRET_FIELDS if name in held and development[name]]
        if insecure:
            raise ConfigurationError(
                "production refuses development secrets: set "
                + ", ".join(f"LEDGERDESK_{n}" for n in insecure)
            )
        for name, value in (
            ("OPERATOR_TOKEN", self.operator_token),
            ("API_KEY_SECRET", self.api_key_secret),
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
        if "MASTER_KEY" in held:
            if not self.master_keys:
                raise ConfigurationError("production needs LEDGERDESK_MASTER_KEY")
            for kid, key in self.master_keys.items():
                if len(set(key)) < _MIN_DISTINCT_KEY_BYTES:
                    raise ConfigurationError(
                        f"production refuses LEDGERDESK_MASTER_KEY {kid!r}: its bytes repeat,"
                        " it is not random"
                    )
        if "AUDIT_SIGNING_KEY" in held:
            if not self.audit_signing_key:
                raise ConfigurationError("production needs LEDGERDESK_AUDIT_SIGNING_KEY")
            seed = _seed_bytes(self.audit_signing_key)
            if len(set(seed)) < _MIN_DISTINCT_KEY_BYTES:
                raise ConfigurationError(
                    "production refuses LEDGERDESK_AUDIT_SIGNING_KEY: its bytes repeat,"
                    " it is not random"
                )

    @staticmethod
    def default_audit_origin(database_prefix: str) -> str:
        return f"ledgerdesk.audit/{database_prefix}"

    @property
    def audit_origin(self) -> str:
        """The name of this deployment's ledger in its signed checkpoints (the note's origin
        line and key name). It must not change once checkpoints are signed under it."""
        return self.audit_log_origin or self.default_audit_origin(self.database_prefix)

    @property
    def current_master_key_id(self) -> str:
        return next(iter(self.master_keys))

    def database_name(self, service: str, purpose: str = "") -> str:
        """``<prefix>_<service>`` for its data, ``<prefix>_<service>_keys`` for its keys."""
        return "_".join(filter(None, (self.database_prefix, service, purpose)))

    def database_dsn(self, service: str, purpose: str = "") -> str:
        params = parse_dsn(self.database_url)
        params["dbname"] = self.database_name(service, purpose)
        return make_dsn(**params)

    def with_overrides(self, **changes) -> Settings:
        return replace(self, **changes)

    def nameko_config(self) -> dict:
        """The dict a nameko container is started with; dependencies read ``LEDGERDESK``."""
        return {
            "AMQP_URI": self.amqp_uri,
            "WEB_SERVER_ADDRESS": f"{self.gateway_host}:{self.gateway_port}",
            "max_workers": self.max_workers,
            "serializer": "json",
            "HEARTBEAT": self.heartbeat,
            "LEDGERDESK": self,
        }
