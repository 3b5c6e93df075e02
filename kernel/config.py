"""Configuration from the environment, with defaults that work against local services.

Every setting has one name (``LEDGERDESK_*``). Development defaults for secrets are marked
``dev-insecure``; a deployment that sets ``LEDGERDESK_ENV=production`` refuses to start with them.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from psycopg2.extensions import make_dsn, parse_dsn

from kernel.signed_note import NoteError, PublicKey, check_key_name, parse_key_list

DEV_MASTER_KEY = "dev-insecure:" + base64.b64encode(b"ledgerdesk-dev-insecure-master-k").decode()
_DEV_KEY_BYTES = b"ledgerdesk-dev-insecure-master-k"
DEV_API_KEY_SECRET = "dev-insecure-api-key-secret"
DEV_OPERATOR_TOKEN = "dev-insecure-operator-token"
# An Ed25519 seed (32 bytes, base64) for the audit ledger's checkpoint signatures.
DEV_AUDIT_SIGNING_KEY = base64.b64encode(b"ledgerdesk-dev-insecure-audit-k!").decode()


class ConfigurationError(Exception):
    """A setting is missing or malformed; the message names the variable."""


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
        except ValueError as exc:
            raise ConfigurationError(f"LEDGERDESK_MASTER_KEY {kid!r} is not base64") from exc
        if len(key) != 32:
            raise ConfigurationError(f"LEDGERDESK_MASTER_KEY {kid!r} must be 32 bytes")
        keys[kid] = key
    if not keys:
        raise ConfigurationError("LEDGERDESK_MASTER_KEY is empty")
    return keys


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
    # Every process serves /healthz, /readyz and /metrics here; 0 picks a free port.
    ops_host: str = "0.0.0.0"
    ops_port: int = 9100
    # AMQP heartbeats (seconds): a dead broker connection is noticed within about twice this.
    heartbeat: int = 10
    log_format: str = "json"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        base = cls()

        def get(name: str, default: str) -> str:
            return env.get(f"LEDGERDESK_{name}", default)

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
            environment=get("ENV", base.environment).strip().lower(),
            amqp_uri=get("AMQP_URI", base.amqp_uri),
            rabbit_management_url=get("RABBIT_MANAGEMENT_URL", base.rabbit_management_url),
            database_url=get("DATABASE_URL", base.database_url),
            database_prefix=get("DATABASE_PREFIX", base.database_prefix),
            master_keys=_parse_master_keys(get("MASTER_KEY", DEV_MASTER_KEY)),
            api_key_secret=get("API_KEY_SECRET", base.api_key_secret),
            operator_token=get("OPERATOR_TOKEN", base.operator_token),
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
            audit_signing_key=get("AUDIT_SIGNING_KEY", base.audit_signing_key),
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
            ops_host=get("OPS_HOST", base.ops_host),
            ops_port=port("OPS_PORT", base.ops_port),
            heartbeat=number("HEARTBEAT", base.heartbeat),
            log_format=get("LOG_FORMAT", base.log_format).strip().lower(),
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
            insecure = [
                name
                for name, value in (
                    (
                        "MASTER_KEY",
                        "dev-insecure"
                        if _DEV_KEY_BYTES in self.master_keys.values()
                        else ",".join(self.master_keys),
                    ),
                    ("API_KEY_SECRET", self.api_key_secret),
                    ("OPERATOR_TOKEN", self.operator_token),
                    (
                        "AUDIT_SIGNING_KEY",
                        "dev-insecure"
                        if self.audit_signing_key == DEV_AUDIT_SIGNING_KEY
                        else self.audit_signing_key,
                    ),
                )
                if "dev-insecure" in value
            ]
            if insecure:
                raise ConfigurationError(
                    "production refuses development secrets: set "
                    + ", ".join(f"LEDGERDESK_{n}" for n in insecure)
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
