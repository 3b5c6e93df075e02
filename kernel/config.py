"""Configuration from the environment, with defaults that work against local services.

Every setting has one name (``LEDGERDESK_*``) and is declared once, as a field of ``Settings``
whose metadata (``setting``) says how it is read, written back, documented and whether it is a
secret; ``from_env``, ``to_env``, the test kit's ``world_env`` and the configuration table of
docs/operations.md (``python -m kernel.config --write``) all derive from that declaration.

Development defaults for secrets are marked ``dev-insecure``; a deployment that sets
``LEDGERDESK_ENV=production`` refuses to start with them, and with secrets too short or too
uniform to be random.

A process reads only the secrets it uses (``SERVICE_SECRETS``); no message, log line or repr
shows a secret's value.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from decimal import Decimal
from typing import Any

from psycopg2.extensions import make_dsn, parse_dsn

from kernel.signed_note import NoteError, PublicKey, check_key_name, parse_key_list

DEV_MASTER_KEY = "dev-insecure:" + base64.b64encode(b"ledgerdesk-dev-insecure-master-k").decode()
_DEV_KEY_BYTES = b"ledgerdesk-dev-insecure-master-k"
DEV_API_KEY_SECRET = "dev-insecure-api-key-secret"
DEV_OPERATOR_TOKEN = "dev-insecure-operator-token"
# An Ed25519 seed (32 bytes, base64) for the audit ledger's checkpoint signatures.
DEV_AUDIT_SIGNING_KEY = base64.b64encode(b"ledgerdesk-dev-insecure-audit-k!").decode()


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


# --- how a value is read from its variable and written back -----------------------------------
#
# A parser takes the variable's name (for its messages, which never repeat a secret) and its
# text, and the settings read before it (the key list needs the ledger's origin); a renderer is
# its inverse, so that ``Settings.from_env(settings.to_env()) == settings``.

Parser = Callable[[str, str, Mapping[str, Any]], Any]


def _text(variable: str, raw: str, read: Mapping[str, Any]) -> str:
    return raw


def _stripped(variable: str, raw: str, read: Mapping[str, Any]) -> str:
    return raw.strip()


def _lowered(variable: str, raw: str, read: Mapping[str, Any]) -> str:
    return raw.strip().lower()


def _environment(variable: str, raw: str, read: Mapping[str, Any]) -> str:
    environment = raw.strip().lower()
    # A closed set: "prod" or "produciton" would otherwise run on every development secret.
    if environment not in ENVIRONMENTS:
        raise ConfigurationError(f"{variable} must be one of " + ", ".join(sorted(ENVIRONMENTS)))
    return environment


def _number(kind: type[int] | type[float]) -> Parser:
    """A positive, finite number of ``kind``."""

    def parse(variable: str, raw: str, read: Mapping[str, Any]) -> int | float:
        try:
            value = kind(raw)
        except ValueError as exc:
            raise ConfigurationError(f"{variable} must be a number, not {raw!r}") from exc
        if not math.isfinite(value) or value <= 0:
            raise ConfigurationError(f"{variable} must be positive")
        return value

    return parse


def _port(variable: str, raw: str, read: Mapping[str, Any]) -> int:
    raw = raw.strip() or "0"
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigurationError(f"{variable} must be a TCP port, or 0 for any")
    return int(raw)


def _names(variable: str, raw: str, read: Mapping[str, Any]) -> tuple[str, ...]:
    """Comma-separated, trimmed, empty entries dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _joined(value: tuple[str, ...]) -> str:
    return ",".join(value)


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


def _master_keys(variable: str, raw: str, read: Mapping[str, Any]) -> dict[str, bytes]:
    return _parse_master_keys(raw)


def _render_master_keys(keys: dict[str, bytes]) -> str:
    return ",".join(f"{kid}:{base64.b64encode(key).decode()}" for kid, key in keys.items())


def _networks(variable: str, raw: str, read: Mapping[str, Any]) -> tuple[str, ...]:
    """Comma-separated CIDRs (a bare address is its /32 or /128), normalised."""
    networks = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            networks.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ConfigurationError(f"{variable}: {part!r} is not an IP network (CIDR)") from None
    return tuple(networks)


def _audit_public_keys(
    variable: str, raw: str, read: Mapping[str, Any]
) -> tuple[PublicKey, ...] | None:
    """None when unset (development derives the key from the signing seed); else a JSON array
    of {public_key, valid_from, valid_until} (``kernel.signed_note.parse_key_list``), whose
    verifier keys must name this ledger's origin."""
    if not raw.strip():
        return None
    origin = read["audit_log_origin"] or Settings.default_audit_origin(read["database_prefix"])
    try:
        return parse_key_list(raw, origin)
    except NoteError as exc:
        raise ConfigurationError(f"{variable}: {exc}") from exc


def _render_audit_public_keys(keys: tuple[PublicKey, ...] | None) -> str:
    return "" if keys is None else json.dumps([key.as_json() for key in keys])


@dataclass(frozen=True)
class Plan:
    """A billing plan: its price per agent per month, in minor units (pence, paise, cents)."""

    name: str
    price_per_agent: int
    currency: str

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "price_per_agent": self.price_per_agent,
            "currency": self.currency,
        }


DEFAULT_PLANS = (
    Plan("standard", 1500, "GBP"),
    Plan("team", 2900, "GBP"),
    Plan("enterprise", 4900, "GBP"),
)


def _plans(variable: str, raw: str, read: Mapping[str, Any]) -> tuple[Plan, ...]:
    if not raw:
        return DEFAULT_PLANS
    try:
        return tuple(
            Plan(str(p["name"]), int(p["price_per_agent"]), str(p["currency"]))
            for p in json.loads(raw)
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"{variable} is not a list of plans") from exc


def _render_plans(plans: tuple[Plan, ...]) -> str:
    return json.dumps([plan.view() for plan in plans])


DEFAULT_TAX_RATES = {"uk": Decimal("0.20"), "in": Decimal("0.18"), "sg": Decimal("0.09")}


def _tax_rates(variable: str, raw: str, read: Mapping[str, Any]) -> dict[str, Decimal]:
    if not raw:
        return dict(DEFAULT_TAX_RATES)
    rates = {}
    for item in raw.split(","):
        region, _, rate = item.partition(":")
        try:
            rates[region.strip()] = Decimal(rate)
        except ArithmeticError as exc:
            raise ConfigurationError(f"{variable}: region:rate,...") from exc
    return rates


def _render_tax_rates(rates: dict[str, Decimal]) -> str:
    return ",".join(f"{region}:{rate}" for region, rate in rates.items())


# --- the declaration --------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """How one setting is spelt in the environment, read, written back and documented."""

    name: str  # after LEDGERDESK_
    doc: str
    parse: Parser = _text
    render: Callable[[Any], str] = str
    # A key or token: a process reads it only if it uses it (SERVICE_SECRETS), a repr never
    # shows it, and deploy/kubernetes/secret.yaml holds it.
    secret: bool = False
    # A URL that may carry a password: a repr masks it, and secret.yaml holds it too unless
    # only the test kit reads it.
    credential: bool = False
    # Read by the test kit and the benchmarks only, never by a process of the platform.
    tests_only: bool = False
    # The default as the configuration table shows it, when its value would not say it.
    shown: str | None = None

    @property
    def variable(self) -> str:
        return PREFIX + self.name


PREFIX = "LEDGERDESK_"


def setting(
    default: Any = MISSING, *, factory: Callable[[], Any] | None = None, **spec: Any
) -> Any:
    """A field of Settings read from ``LEDGERDESK_<name>``: see ``Variable``."""
    metadata = {"variable": Variable(**spec)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Every setting, declared once: its variable, parser, renderer, secrecy and meaning are
    its field's metadata (``setting``); ``from_env``, ``to_env``, the test kit's ``world_env``
    and the configuration table (``python -m kernel.config --write``) are derived from them."""

    environment: str = setting(
        "development",
        name="ENV",
        parse=_environment,
        doc="`development`, `test` or `production`; production refuses development secrets",
    )
    amqp_uri: str = setting(
        "amqp://guest:guest@127.0.0.1:5672/",
        name="AMQP_URI",
        credential=True,
        shown="local RabbitMQ, guest",
        doc="the broker; several URIs separated by `;` are tried in turn",
    )
    rabbit_management_url: str = setting(
        "http://guest:guest@127.0.0.1:15672",
        name="RABBIT_MANAGEMENT_URL",
        credential=True,
        shown="local RabbitMQ, guest",
        tests_only=True,
        doc="the broker's management API: the test kit's vhosts and the benchmarks only",
    )
    # The server-level DSN; each service's databases are derived from it by name.
    database_url: str = setting(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        name="DATABASE_URL",
        credential=True,
        shown="local server, postgres",
        doc="the server-level DSN; databases are `<prefix>_<service>[_keys]`",
    )
    database_prefix: str = setting(
        "ledgerdesk", name="DATABASE_PREFIX", doc="the prefix of every database's name"
    )
    master_keys: dict[str, bytes] = setting(
        factory=lambda: _parse_master_keys(DEV_MASTER_KEY),
        name="MASTER_KEY",
        parse=_master_keys,
        render=_render_master_keys,
        secret=True,
        shown="dev-insecure",
        doc="`kid:base64[,kid:base64...]` of 32 bytes each, current first",
    )
    api_key_secret: str = setting(
        DEV_API_KEY_SECRET,
        name="API_KEY_SECRET",
        secret=True,
        shown="dev-insecure",
        doc="the HMAC key of stored API key hashes",
    )
    operator_token: str = setting(
        DEV_OPERATOR_TOKEN,
        name="OPERATOR_TOKEN",
        secret=True,
        shown="dev-insecure",
        doc="the operator routes' bearer credential",
    )
    gateway_host: str = setting("127.0.0.1", name="GATEWAY_HOST", doc="the gateway's address")
    gateway_port: int = setting(8000, name="GATEWAY_PORT", parse=_number(int), doc="its port")
    gateway_processes: int = setting(
        2, name="GATEWAY_PROCESSES", parse=_number(int), doc="gateway processes sharing the port"
    )
    rpc_timeout: float = setting(
        10.0, name="RPC_TIMEOUT", parse=_number(float), doc="seconds per RPC call"
    )
    delivery_limit: int = setting(
        5, name="DELIVERY_LIMIT", parse=_number(int), doc="quorum queue delivery limit"
    )
    # How long a dead letter waits in a dead-letter queue (``<queue>.dead``, ``rpc-<s>.dead``)
    # for an operator before the broker drops it. audit.ledger.dead can hold access events with
    # their IP address and user agent in plaintext, outside the audit keys that end them, and a
    # tenant may shorten its access-log period to one day: two days keep such a copy within a
    # day of the shortest period, and still give an operator, alerted by the
    # ``ledgerdesk_dead_letters`` gauge, two days to mend the cause and replay.
    dead_letter_ttl_hours: float = setting(
        48.0,
        name="DEAD_LETTER_TTL_HOURS",
        parse=_number(float),
        doc="a dead letter's life in `<queue>.dead` / `rpc-<service>.dead` (queue argument"
        " `x-message-ttl`); short because `audit.ledger.dead` can hold access events (IP, user"
        " agent) and a tenant's access-log period can be one day",
    )
    # Past this many messages a dead-letter queue drops its oldest: a flood of failures cannot
    # fill the broker's memory and disk (whose alarms block every publisher of the platform).
    dead_letter_max_messages: int = setting(
        10_000,
        name="DEAD_LETTER_MAX_MESSAGES",
        parse=_number(int),
        doc="per dead-letter queue (`x-max-length`, `x-overflow: drop-head`): past it the"
        " oldest goes",
    )
    max_workers: int = setting(
        10, name="MAX_WORKERS", parse=_number(int), doc="nameko workers (DB pool = this + 5)"
    )
    regions: tuple[str, ...] = setting(
        ("uk", "in", "sg"),
        name="REGIONS",
        parse=_names,
        render=_joined,
        doc="tenant regions, comma-separated",
    )
    policy_version: str = setting(
        "2026-01", name="POLICY_VERSION", doc="a fresh platform's first policy version"
    )
    traces_exporter: str = setting(
        "none",
        name="TRACES",
        doc="span exporter: `none`, `console` or `otlp` (to `OTEL_EXPORTER_OTLP_ENDPOINT`)",
    )
    relay_batch_size: int = setting(
        200, name="RELAY_BATCH_SIZE", parse=_number(int), doc="rows per relay batch"
    )
    key_cache_seconds: float = setting(
        30.0, name="KEY_CACHE_SECONDS", parse=_number(float), doc="subject-key cache TTL"
    )
    grace_days: float = setting(
        21.0,
        name="GRACE_DAYS",
        parse=_number(float),
        doc="a cancelled tenant's grace before destruction",
    )
    audit_signing_key: str = setting(
        DEV_AUDIT_SIGNING_KEY,
        name="AUDIT_SIGNING_KEY",
        secret=True,
        shown="dev-insecure",
        doc="Ed25519 seed (base64 of 32 bytes): checkpoints and erasure receipts; the audit"
        " and retention services only",
    )
    # The checkpoints' origin line and key name; empty: "ledgerdesk.audit/<database prefix>".
    audit_log_origin: str = setting(
        "",
        name="AUDIT_LOG_ORIGIN",
        parse=_stripped,
        shown="`ledgerdesk.audit/<database prefix>`",
        doc="the ledger's name in its checkpoints (origin line and key name); never change it"
        " once checkpoints are signed",
    )
    # The public keys that may sign the ledger's checkpoints, each with its validity period;
    # None (unset): development derives the one key from the seed, valid since the epoch.
    audit_public_keys: tuple[PublicKey, ...] | None = setting(
        None,
        name="AUDIT_PUBLIC_KEYS",
        parse=_audit_public_keys,
        render=_render_audit_public_keys,
        shown="unset: the seed's key, valid since the epoch; production requires it",
        doc='JSON array of `{"public_key", "valid_from", "valid_until"}` (base64 raw Ed25519'
        " key, ISO-8601 with offset, `valid_until` null: no end; `verifier_key` in the note"
        " form may stand for `public_key`); the gateway publishes it, audit verifies under it"
        " and will not start if its signing key is not in it and valid now",
    )
    checkpoint_seconds: float = setting(
        60.0,
        name="CHECKPOINT_SECONDS",
        parse=_number(float),
        doc="how often the ledger signs a checkpoint",
    )
    schedule_seconds: float = setting(
        60.0,
        name="SCHEDULE_SECONDS",
        parse=_number(float),
        doc="how often retention runs its schedules and follow-ups",
    )
    # A data-subject request not answered by every service within this turns failed (alert).
    privacy_deadline_days: float = setting(
        30.0,
        name="PRIVACY_DEADLINE_DAYS",
        parse=_number(float),
        doc="a data-subject request not completed by then fails (alert)",
    )
    # The first re-send of a command a service has not (or not successfully) answered; each
    # further one waits twice as long, up to a day.
    privacy_retry_seconds: float = setting(
        300.0,
        name="PRIVACY_RETRY_SECONDS",
        parse=_number(float),
        doc="first re-send of an unanswered or failed part; doubles, up to a day",
    )
    # The length of the "day" retention periods (access log, closed tickets) are counted in,
    # and of the access log's key buckets: a test makes it seconds long, production refuses that.
    day_seconds: int = setting(
        86400,
        name="DAY_SECONDS",
        parse=_number(int),
        doc="the day retention periods and access-log keys count in; production refuses any other",
    )
    rate_limit: float = setting(
        50.0,
        name="RATE_LIMIT",
        parse=_number(float),
        doc="per API key and gateway process: requests per second, sustained",
    )
    rate_burst: int = setting(100, name="RATE_BURST", parse=_number(int), doc="and its burst")
    # The networks of the proxies (load balancers) whose X-Forwarded-For / Forwarded headers
    # say who the client is (gateway.clientaddr); none by default: the socket peer is the client.
    trusted_proxies: tuple[str, ...] = setting(
        (),
        name="TRUSTED_PROXIES",
        parse=_networks,
        render=_joined,
        doc="CIDRs of proxies whose `X-Forwarded-For` / `Forwarded` name the client"
        " ([operations](#limits-client-addresses-and-the-access-log-of-unauthenticated-requests))",
    )
    # Per client address and gateway process, before anything else is done with a request:
    # generous, since one address may be a whole office behind NAT.
    client_rate_limit: float = setting(
        100.0,
        name="CLIENT_RATE_LIMIT",
        parse=_number(float),
        doc="per client address and gateway process, every request, before anything else:"
        " requests per second",
    )
    client_rate_burst: int = setting(
        200, name="CLIENT_RATE_BURST", parse=_number(int), doc="and its burst"
    )
    # Refused credentials per client address: past the burst, 429 without asking accounts.
    auth_failure_rate_limit: float = setting(
        0.1,
        name="AUTH_FAILURE_RATE_LIMIT",
        parse=_number(float),
        doc="refused credentials per client address and second: past them and the burst, 429"
        " without asking accounts",
    )
    auth_failure_burst: int = setting(
        10, name="AUTH_FAILURE_BURST", parse=_number(int), doc="and its burst"
    )
    # Sign-ups per client address: three at once, then one every ten minutes.
    signup_rate_limit: float = setting(
        1 / 600,
        name="SIGNUP_RATE_LIMIT",
        parse=_number(float),
        shown="`0.00167` (one per 10 min)",
        doc="sign-ups per client address and second",
    )
    signup_burst: int = setting(3, name="SIGNUP_BURST", parse=_number(int), doc="and its burst")
    # Unauthenticated requests written to the access log one by one, per gateway process and
    # interval; the rest are counted into one access_summarized event per interval.
    unauthenticated_log_limit: int = setting(
        60,
        name="UNAUTHENTICATED_LOG_LIMIT",
        parse=_number(int),
        doc="unauthenticated requests access-logged one by one per interval and gateway"
        " process; the rest go into one `access_summarized`",
    )
    unauthenticated_log_seconds: float = setting(
        60.0,
        name="UNAUTHENTICATED_LOG_SECONDS",
        parse=_number(float),
        doc="that interval (aligned on the epoch)",
    )
    # Every process serves /healthz, /readyz and /metrics here; 0 picks a free port.
    ops_host: str = setting("0.0.0.0", name="OPS_HOST", doc="each process's ops endpoints' address")
    ops_port: int = setting(
        9100,
        name="OPS_PORT",
        parse=_port,
        doc="their port: `/healthz`, `/readyz`, `/metrics` (0: a free port)",
    )
    # AMQP heartbeats (seconds): a dead broker connection is noticed within about twice this.
    heartbeat: int = setting(
        10,
        name="HEARTBEAT",
        parse=_number(int),
        doc="AMQP heartbeat seconds, 4-600 (consumers, RPC replies, relays)",
    )
    log_format: str = setting(
        "json",
        name="LOG_FORMAT",
        parse=_lowered,
        doc="`json` (one object per line) or `text`",
    )
    billing_plans: tuple[Plan, ...] = setting(
        DEFAULT_PLANS,
        name="BILLING_PLANS",
        parse=_plans,
        render=_render_plans,
        shown="standard, team, enterprise (1500, 2900, 4900 GBP)",
        doc='the plans, JSON: `[{"name", "price_per_agent", "currency"}]`, prices per agent'
        " and month in minor units",
    )
    tax_rates: dict[str, Decimal] = setting(
        factory=lambda: dict(DEFAULT_TAX_RATES),
        name="TAX_RATES",
        parse=_tax_rates,
        render=_render_tax_rates,
        doc="the tax rate per region, `region:rate,...`",
    )
    # Invoices and payment records are kept this long (tax and accounting law), then erased.
    legal_hold_years: int = setting(
        10,
        name="LEGAL_HOLD_YEARS",
        parse=_number(int),
        doc="how long billing holds invoices and payment records (tax and accounting law)",
    )
    # The secrets this process holds (names after LEDGERDESK_): see SERVICE_SECRETS. Not a
    # variable: ``from_env`` gives it from the service it reads for.
    held_secrets: frozenset[str] = field(default_factory=lambda: ALL_SECRETS)

    def __repr__(self) -> str:
        # A Settings ends up in nameko's config, and so in tracebacks and debug output: secrets
        # are shown as held or not, and URLs without their passwords.
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            variable = f.metadata.get("variable")
            if variable is not None and variable.secret:
                text = "'***'" if value else "''"
            elif variable is not None and variable.credential:
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
        read: dict[str, Any] = {}
        held: frozenset[str] = ALL_SECRETS
        for f, variable in declared():
            if variable.secret and variable.name not in held:
                # A secret it does not use: blank in production, so that a use fails loudly
                # rather than fall back to a public development value.
                read[f.name] = _blank(f) if read["environment"] == "production" else _default(f)
                continue
            raw = env.get(variable.variable)
            if raw is None:
                read[f.name] = _default(f)
            else:
                if variable.secret and raw != raw.strip():
                    # The consumer uses a secret byte for byte: whitespace around it (a newline
                    # left by a file) is refused rather than kept or stripped.
                    raise ConfigurationError(
                        f"{variable.variable} has whitespace around it (a newline from a"
                        " file?): remove it"
                    )
                read[f.name] = variable.parse(variable.variable, raw, read)
            if f.name == "environment":
                held = _held_secrets(read["environment"], service)
        settings = cls(**read, held_secrets=held)
        settings.check()
        return settings

    def to_env(self) -> dict[str, str]:
        """The variables ``from_env`` reads these settings back from: every setting, and of the
        secrets those this process holds (``from_env(to_env(), service)`` gives it back)."""
        return {
            variable.variable: variable.render(getattr(self, f.name))
            for f, variable in declared()
            if not variable.secret or variable.name in self.held_secrets
        }

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


def declared() -> Iterator[tuple[Field[Any], Variable]]:
    """Every setting read from the environment, in the order they are read, with its variable."""
    for f in fields(Settings):
        variable = f.metadata.get("variable")
        if variable is not None:
            yield f, variable


def _default(f: Field[Any]) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _blank(f: Field[Any]) -> Any:
    """A secret's value when a process does not hold it: empty, of its type."""
    return type(_default(f))()


# Every secret setting, by the name after ``LEDGERDESK_``, and its field of Settings.
SECRET_FIELDS: dict[str, str] = {
    variable.name: f.name for f, variable in declared() if variable.secret
}
ALL_SECRETS: frozenset[str] = frozenset(SECRET_FIELDS)


def _held_secrets(environment: str, service: str | None) -> frozenset[str]:
    if service is None:
        return ALL_SECRETS
    if service in SERVICE_SECRETS:
        return SERVICE_SECRETS[service]
    if environment == "production":
        raise ConfigurationError(
            f"no secrets are declared for the service {service!r} (kernel.config.SERVICE_SECRETS)"
        )
    return frozenset()


if __name__ == "__main__":
    # The configuration table of docs/operations.md (kernel.config_table): imported here, the
    # table's module reads this one as ``kernel.config``, not as ``__main__``.
    from kernel.config_table import main

    raise SystemExit(main())
