"""Configuration from the environment, with defaults that work against local services.

Every setting has one name (``LEDGERDESK_*``) and is declared once, as a field of ``Settings``
whose metadata (``setting``) says how it is read, written back, documented and whether it is a
secret; ``from_env``, ``to_env``, the test kit's ``world_env`` and the configuration table of
docs/operations.md (``python -m kernel.config --write``) all derive from that declaration.

Development defaults for secrets are marked ``dev-insecure``; a deployment that sets
``LEDGERDESK_ENV=production`` refuses to start with them, and with secrets too short or too
uniform to be random.

A process reads only the secrets it uses (``SERVICE_SECRETS``); no message, log line or repr
shows a secret's value. How each value is parsed and written back is ``kernel.config_values``;
what production asks of its secrets, ``kernel.config_secrets``.
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from decimal import Decimal
from typing import Any

from psycopg2.extensions import make_dsn, parse_dsn

from kernel import config_values as values
from kernel.config_secrets import check_production_secrets, seed_bytes
from kernel.config_values import ENVIRONMENTS as ENVIRONMENTS
from kernel.config_values import ConfigurationError as ConfigurationError
from kernel.signed_note import NoteError, PublicKey, check_key_name

DEV_MASTER_KEY = "dev-insecure:" + base64.b64encode(b"ledgerdesk-dev-insecure-master-k").decode()
_DEV_KEY_BYTES = b"ledgerdesk-dev-insecure-master-k"
DEV_API_KEY_SECRET = "dev-insecure-api-key-secret"
DEV_OPERATOR_TOKEN = "dev-insecure-operator-token"
DEV_SMTP_PASSWORD = "dev-insecure-smtp-password"
DEV_S3_ACCESS_KEY_ID = "dev-insecure-s3-access-key-id"
DEV_S3_SECRET_ACCESS_KEY = "dev-insecure-s3-secret-access-key"
# An Ed25519 seed (32 bytes, base64) for the audit ledger's checkpoint signatures.
DEV_AUDIT_SIGNING_KEY = base64.b64encode(b"ledgerdesk-dev-insecure-audit-k!").decode()


# The secrets each process uses, and the only ones it reads from the environment: a secret it
# does not use is blank in production (so a use would fail loudly rather than fall back to a
# public development value) and its development value otherwise. Production checks only these;
# docker-compose.yml and deploy/kubernetes give each process exactly these.
SERVICE_SECRETS: dict[str, frozenset[str]] = {
    # The SMTP password: accounts mails notices to agents and admins, tickets public replies
    # (kernel.mail). The object store's keys: tickets keeps attachments' chunks there when so
    # configured.
    "accounts": frozenset({"MASTER_KEY", "API_KEY_SECRET", "SMTP_PASSWORD"}),
    "tickets": frozenset(
        {
            "MASTER_KEY",
            "SMTP_PASSWORD",
            "ATTACHMENT_S3_ACCESS_KEY_ID",
            "ATTACHMENT_S3_SECRET_ACCESS_KEY",
        }
    ),
    "billing": frozenset({"MASTER_KEY"}),
    "audit": frozenset({"MASTER_KEY", "AUDIT_SIGNING_KEY"}),
    # Erasure receipts are signed with the audit key, as the ledger's checkpoints are.
    "retention": frozenset({"MASTER_KEY", "AUDIT_SIGNING_KEY"}),
    # Not the audit seed: the public key it publishes is configured (LEDGERDESK_AUDIT_PUBLIC_KEYS).
    # The API key secret: the gateway hashes a presented key to find it in its credentials.
    "gateway": frozenset({"MASTER_KEY", "OPERATOR_TOKEN", "API_KEY_SECRET"}),
    # The router in front of the region cells: it reads its directory's ids, and hashes a
    # presented key to recognise a moved tenant's (services.tenant_move).
    "router": frozenset({"API_KEY_SECRET"}),
    # Creating databases and declaring the broker's topology (and the operators' dead-letter
    # and relay tools) take the connection settings only.
    "prepare": frozenset(),
    # A cell's reconciliation of the router's directory (gateway.directory_sync --cell): ids
    # and statuses only, through the two databases' URLs.
    "directory-sync": frozenset(),
}

# --- the declaration --------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """How one setting is spelt in the environment, read, written back and documented."""

    name: str  # after LEDGERDESK_
    doc: str
    parse: values.Parser = values.text
    render: Callable[[Any], str] = str
    # A key or token: a process reads it only if it uses it (SERVICE_SECRETS), a repr never
    # shows it, and the cluster's Secret holds it (deploy/kubernetes/secrets.example.env).
    secret: bool = False
    # A URL that may carry a password: a repr masks it, and the Secret holds it too unless
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
# LEDGERDESK_LOG_LEVEL's values, least severe first (logging's levels, in lower case).
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
# LEDGERDESK_DATABASE_SSLMODE's values (libpq's).
SSLMODES: tuple[str, ...] = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# LEDGERDESK_SMTP_SECURITY's values (kernel.mail.smtp).
SMTP_SECURITY: tuple[str, ...] = ("starttls", "tls", "none")


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
        parse=values.environment,
        doc="`development`, `test` or `production`; production refuses development secrets",
    )
    amqp_uri: str = setting(
        "amqp://guest:guest@127.0.0.1:5672/",
        name="AMQP_URI",
        credential=True,
        shown="local RabbitMQ, guest",
        doc="the broker; several URIs separated by `;` are tried in turn",
    )
    # TLS to the broker: on for `amqps://` URIs, which then verify the broker's certificate
    # (chain and name) and may present a client certificate. The files are paths, mounted
    # from a Secret in Kubernetes; the key file is the secret, never this setting.
    amqp_ca_file: str = setting(
        "",
        name="AMQP_CA_FILE",
        parse=values.stripped,
        shown="empty: the system's authorities",
        doc="PEM of the authorities the broker's certificate must chain to (`amqps://` only)",
    )
    amqp_cert_file: str = setting(
        "",
        name="AMQP_CERT_FILE",
        parse=values.stripped,
        doc="PEM client certificate presented to the broker (`amqps://` only; with"
        " `LEDGERDESK_AMQP_KEY_FILE`); empty: none",
    )
    amqp_key_file: str = setting(
        "",
        name="AMQP_KEY_FILE",
        parse=values.stripped,
        doc="PEM private key of that certificate (a file from a Secret, readable by the"
        " process only)",
    )
    rabbit_management_url: str = setting(
        "http://guest:guest@127.0.0.1:15672",
        name="RABBIT_MANAGEMENT_URL",
        credential=True,
        shown="local RabbitMQ, guest",
        tests_only=True,
        doc="the broker's management API: the test kit's vhosts, the benchmarks and `make run`'s"
        " cells' vhosts only",
    )
    # The server-level DSN; each service's databases are derived from it by name.
    database_url: str = setting(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        name="DATABASE_URL",
        credential=True,
        shown="local server, postgres",
        doc="the server-level DSN; databases are `<prefix>_<service>[_keys]`",
    )
    # libpq's TLS parameters, added to every connection made from LEDGERDESK_DATABASE_URL
    # (the same names in the URL's query work too; these, when set, take precedence).
    database_sslmode: str = setting(
        "",
        name="DATABASE_SSLMODE",
        parse=values.lowered,
        shown="empty: the URL's, else libpq's `prefer`",
        doc="libpq `sslmode`: `verify-full` checks the server's certificate and its name",
    )
    database_sslrootcert: str = setting(
        "",
        name="DATABASE_SSLROOTCERT",
        parse=values.stripped,
        doc="libpq `sslrootcert`: PEM of the authorities the server's certificate must chain to",
    )
    database_sslcert: str = setting(
        "",
        name="DATABASE_SSLCERT",
        parse=values.stripped,
        doc="libpq `sslcert`: PEM client certificate (for `cert` authentication); empty: none",
    )
    database_sslkey: str = setting(
        "",
        name="DATABASE_SSLKEY",
        parse=values.stripped,
        doc="libpq `sslkey`: its private key (a file from a Secret, mode 0600)",
    )
    database_prefix: str = setting(
        "ledgerdesk", name="DATABASE_PREFIX", doc="the prefix of every database's name"
    )
    master_keys: dict[str, bytes] = setting(
        factory=lambda: values.parse_master_keys(DEV_MASTER_KEY),
        name="MASTER_KEY",
        parse=values.master_keys,
        render=values.render_master_keys,
        secret=True,
        shown="dev-insecure",
        doc="`kid:base64[,kid:base64...]` of 32 bytes each, current first",
    )
    # A cell's master keys may differ from its neighbours' (each region's key management): the
    # cell's processes get these as their LEDGERDESK_MASTER_KEY, and the tenant mover
    # (services.tenant_move) unwraps with the source cell's and wraps under the target's.
    cell_master_keys: dict[str, dict[str, bytes]] = setting(
        factory=dict,
        name="CELL_MASTER_KEYS",
        parse=values.cell_master_keys,
        render=values.render_cell_master_keys,
        secret=True,
        shown="empty: every cell uses LEDGERDESK_MASTER_KEY",
        doc="a region cell's own master keys, `region=kid:base64[,kid:base64...];...`, in place"
        " of `LEDGERDESK_MASTER_KEY` for that cell (`make run --cells`, the tenant mover)",
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
    gateway_port: int = setting(8000, name="GATEWAY_PORT", parse=values.number(int), doc="its port")
    gateway_processes: int = setting(
        2,
        name="GATEWAY_PROCESSES",
        parse=values.number(int),
        doc="gateway processes sharing the port",
    )
    rpc_timeout: float = setting(
        10.0, name="RPC_TIMEOUT", parse=values.number(float), doc="seconds per RPC call"
    )
    delivery_limit: int = setting(
        5, name="DELIVERY_LIMIT", parse=values.number(int), doc="quorum queue delivery limit"
    )
    # Off by default: in development and tests every process usually connects as one user, and
    # then no one's messages can be told apart (kernel.broker_users).
    broker_user_check: bool = setting(
        False,
        name="BROKER_USER_CHECK",
        parse=values.flag,
        render=values.render_flag,
        doc="each process has its own broker user (`ledgerdesk-<process>`): an event is taken"
        " only with the AMQP `user_id` of its source's user or the gateway's, an RPC request"
        " only from a process's user through the RPC exchange; others are dead-lettered",
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
        parse=values.number(float),
        doc="a dead letter's life in `<queue>.dead` / `rpc-<service>.dead` (queue argument"
        " `x-message-ttl`); short because `audit.ledger.dead` can hold access events (IP, user"
        " agent) and a tenant's access-log period can be one day",
    )
    # Past this many messages a dead-letter queue drops its oldest: a flood of failures cannot
    # fill the broker's memory and disk (whose alarms block every publisher of the platform).
    dead_letter_max_messages: int = setting(
        10_000,
        name="DEAD_LETTER_MAX_MESSAGES",
        parse=values.number(int),
        doc="per dead-letter queue (`x-max-length`, `x-overflow: reject-publish`): past it more"
        " is refused and waits in its consumer queue (an RPC request is dropped)",
    )
    max_workers: int = setting(
        10, name="MAX_WORKERS", parse=values.number(int), doc="nameko workers (DB pool = this + 5)"
    )
    regions: tuple[str, ...] = setting(
        ("uk", "in", "sg"),
        name="REGIONS",
        parse=values.names,
        render=values.joined,
        doc="tenant regions, comma-separated; a region cell's own (its sign-up takes no other)",
    )
    # A cell is a whole platform whose LEDGERDESK_REGIONS names its region (its sign-up takes no
    # other), with databases and a vhost of its own; the router in front of the cells
    # (gateway.router) reads this to find them.
    cells: dict[str, str] = setting(
        factory=dict,
        name="CELLS",
        parse=values.cells,
        render=values.render_cells,
        shown="empty: one platform, no router",
        doc="the router's cells, `region=http://gateway:port,...` (each cell's gateway; the"
        " first is where keys naming no region go)",
    )
    cells_mail_in: dict[str, str] = setting(
        factory=dict,
        name="CELLS_MAIL_IN",
        parse=values.mail_cells,
        render=values.render_cells,
        shown="empty: the router takes no mail",
        doc="the router's cells' mail listeners, `region=smtp://tickets:port,...` (or"
        " `lmtp://`): mail to a support address goes to its tenant's cell",
    )
    # Where the router's reconciliation finds each cell's accounts database, on the router's
    # own server: the cells' prefixes need not follow the router's (Compose's do not).
    cells_database_prefixes: dict[str, str] = setting(
        factory=dict,
        name="CELLS_DATABASE_PREFIXES",
        parse=values.cell_prefixes,
        render=values.render_cells,
        shown="empty: `<prefix>_<region>` for each",
        doc="the router's cells' database prefixes, `region=prefix,...`: it reads each cell's"
        " tenants (ids and status) from `<its prefix>_accounts` on `LEDGERDESK_DATABASE_URL`'s"
        " server",
    )
    # How long a destroyed tenant's id may stay in the router's directory, and how soon a
    # tenant it missed (signed up before the router, or not recorded) is found there.
    directory_sync_minutes: float = setting(
        15.0,
        name="DIRECTORY_SYNC_MINUTES",
        parse=values.number(float),
        doc="the router reconciles its directory with the cells' tenants on start and every"
        " this many minutes (`gateway.directory_sync`): a destroyed tenant's row goes within it",
    )
    # A cell whose database server the router cannot reach (Kubernetes) reconciles its own
    # region's rows itself (`python -m gateway.directory_sync --cell`): it writes to the
    # router's directory, whose whole DSN this is (database name included).
    directory_database_url: str = setting(
        "",
        name="DIRECTORY_DATABASE_URL",
        credential=True,
        shown="empty: the cell does not reconcile the directory",
        doc="a cell's DSN of the router's directory database (`<router prefix>_directory`),"
        " for `python -m gateway.directory_sync --cell REGION` only",
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
        200, name="RELAY_BATCH_SIZE", parse=values.number(int), doc="rows per relay batch"
    )
    key_cache_seconds: float = setting(
        30.0, name="KEY_CACHE_SECONDS", parse=values.number(float), doc="subject-key cache TTL"
    )
    grace_days: float = setting(
        21.0,
        name="GRACE_DAYS",
        parse=values.number(float),
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
        parse=values.stripped,
        shown="`ledgerdesk.audit/<database prefix>`",
        doc="the ledger's name in its checkpoints (origin line and key name); never change it"
        " once checkpoints are signed",
    )
    # The public keys that may sign the ledger's checkpoints, each with its validity period;
    # None (unset): development derives the one key from the seed, valid since the epoch.
    audit_public_keys: tuple[PublicKey, ...] | None = setting(
        None,
        name="AUDIT_PUBLIC_KEYS",
        parse=values.audit_public_keys,
        render=values.render_audit_public_keys,
        shown="unset: the seed's key, valid since the epoch; production requires it",
        doc='JSON array of `{"public_key", "valid_from", "valid_until"}` (base64 raw Ed25519'
        " key, ISO-8601 with offset, `valid_until` null: no end; `verifier_key` in the note"
        " form may stand for `public_key`); the gateway publishes it, audit verifies under it"
        " and will not start if its signing key is not in it and valid now",
    )
    checkpoint_seconds: float = setting(
        60.0,
        name="CHECKPOINT_SECONDS",
        parse=values.number(float),
        doc="how often the ledger signs a checkpoint",
    )
    schedule_seconds: float = setting(
        60.0,
        name="SCHEDULE_SECONDS",
        parse=values.number(float),
        doc="how often retention runs its schedules and follow-ups",
    )
    # A tenant's whole export (services.retention.tenant_exports) can be downloaded this long
    # after it is ready; then its bytes are deleted and its key shredded.
    export_ttl_seconds: float = setting(
        86400.0,
        name="EXPORT_TTL_SECONDS",
        parse=values.number(float),
        doc="how long a tenant's export stays downloadable once ready (then deleted)",
    )
    # The builder of an export renews its claim after every page; a builder that died (a
    # killed process) is known by a claim not renewed for this long, and another starts over.
    export_lease_seconds: float = setting(
        60.0,
        name="EXPORT_LEASE_SECONDS",
        parse=values.number(float),
        doc="an export whose builder has not reported for this long is started over",
    )
    # A data-subject request not answered by every service within this turns failed (alert).
    privacy_deadline_days: float = setting(
        30.0,
        name="PRIVACY_DEADLINE_DAYS",
        parse=values.number(float),
        doc="a data-subject request not completed by then fails (alert)",
    )
    # The first re-send of a command a service has not (or not successfully) answered; each
    # further one waits twice as long, up to a day.
    privacy_due_soon_days: float = setting(
        7.0,
        name="PRIVACY_DUE_SOON_DAYS",
        parse=values.number(float),
        doc="an open data-subject request this close to its deadline is announced once"
        " (`privacy_request_due_soon`: the tenant's admins are mailed); 0: never",
    )
    privacy_retry_seconds: float = setting(
        300.0,
        name="PRIVACY_RETRY_SECONDS",
        parse=values.number(float),
        doc="first re-send of an unanswered or failed part; doubles, up to a day",
    )
    # The length of the "day" retention periods (access log, closed tickets) are counted in,
    # and of the access log's key buckets: a test makes it seconds long, production refuses that.
    day_seconds: int = setting(
        86400,
        name="DAY_SECONDS",
        parse=values.number(int),
        doc="the day retention periods and access-log keys count in; production refuses any other",
    )
    rate_limit: float = setting(
        50.0,
        name="RATE_LIMIT",
        parse=values.number(float),
        doc="per API key and gateway process: requests per second, sustained",
    )
    rate_burst: int = setting(100, name="RATE_BURST", parse=values.number(int), doc="and its burst")
    # The networks of the proxies (load balancers) whose X-Forwarded-For / Forwarded headers
    # say who the client is (gateway.clientaddr); none by default: the socket peer is the client.
    trusted_proxies: tuple[str, ...] = setting(
        (),
        name="TRUSTED_PROXIES",
        parse=values.networks,
        render=values.joined,
        doc="CIDRs of proxies whose `X-Forwarded-For` / `Forwarded` name the client"
        " ([operations](#limits-client-addresses-and-the-access-log-of-unauthenticated-requests))",
    )
    # Per client address and gateway process, before anything else is done with a request:
    # generous, since one address may be a whole office behind NAT.
    client_rate_limit: float = setting(
        100.0,
        name="CLIENT_RATE_LIMIT",
        parse=values.number(float),
        doc="per client address and gateway process, every request, before anything else:"
        " requests per second",
    )
    client_rate_burst: int = setting(
        200, name="CLIENT_RATE_BURST", parse=values.number(int), doc="and its burst"
    )
    # Refused credentials per client address: past the burst, 429 without asking accounts.
    auth_failure_rate_limit: float = setting(
        0.1,
        name="AUTH_FAILURE_RATE_LIMIT",
        parse=values.number(float),
        doc="refused credentials per client address and second: past them and the burst, 429"
        " without asking accounts",
    )
    auth_failure_burst: int = setting(
        10, name="AUTH_FAILURE_BURST", parse=values.number(int), doc="and its burst"
    )
    # Sign-ups per client address: three at once, then one every ten minutes.
    signup_rate_limit: float = setting(
        1 / 600,
        name="SIGNUP_RATE_LIMIT",
        parse=values.number(float),
        shown="`0.00167` (one per 10 min)",
        doc="sign-ups per client address and second",
    )
    signup_burst: int = setting(
        3, name="SIGNUP_BURST", parse=values.number(int), doc="and its burst"
    )
    # Unauthenticated requests written to the access log one by one, per gateway process and
    # interval; the rest are counted into one access_summarized event per interval.
    unauthenticated_log_limit: int = setting(
        60,
        name="UNAUTHENTICATED_LOG_LIMIT",
        parse=values.number(int),
        doc="unauthenticated requests access-logged one by one per interval and gateway"
        " process; the rest go into one `access_summarized`",
    )
    unauthenticated_log_seconds: float = setting(
        60.0,
        name="UNAUTHENTICATED_LOG_SECONDS",
        parse=values.number(float),
        doc="that interval (aligned on the epoch)",
    )
    # The gateway authenticates from its projection of accounts' credentials: when accounts'
    # news of them waits unread this long (or no gateway consumes it), it refuses (503) rather
    # than accept a key that may have been revoked meanwhile.
    credentials_lag_seconds: float = setting(
        5.0,
        name="CREDENTIALS_LAG_SECONDS",
        parse=values.number(float),
        doc="seconds accounts' credential events may wait unread before the gateway refuses"
        " every key (503)",
    )
    # Every process serves /healthz, /readyz and /metrics here; 0 picks a free port.
    ops_host: str = setting("0.0.0.0", name="OPS_HOST", doc="each process's ops endpoints' address")
    ops_port: int = setting(
        9100,
        name="OPS_PORT",
        parse=values.port,
        doc="their port: `/healthz`, `/readyz`, `/metrics` (0: a free port)",
    )
    # AMQP heartbeats (seconds): a dead broker connection is noticed within about twice this.
    heartbeat: int = setting(
        10,
        name="HEARTBEAT",
        parse=values.number(int),
        doc="AMQP heartbeat seconds, 4-600 (consumers, RPC replies, relays)",
    )
    log_format: str = setting(
        "json",
        name="LOG_FORMAT",
        parse=values.lowered,
        doc="`json` (one object per line) or `text`",
    )
    # The least severe line a process writes. Libraries stay at info even at debug: their debug
    # lines (broker frames, HTTP requests) are not reviewed for what they may quote.
    log_level: str = setting(
        "info",
        name="LOG_LEVEL",
        parse=values.lowered,
        doc="`debug`, `info`, `warning` or `error`: the least severe line a process writes;"
        " `debug` is Ledgerdesk's own modules only, libraries stay at `info`",
    )
    billing_plans: tuple[values.Plan, ...] = setting(
        values.DEFAULT_PLANS,
        name="BILLING_PLANS",
        parse=values.plans,
        render=values.render_plans,
        shown="standard, team, enterprise (1500, 2900, 4900 GBP)",
        doc='the plans, JSON: `[{"name", "price_per_agent", "currency"}]`, prices per agent'
        " and month in minor units",
    )
    tax_rates: dict[str, Decimal] = setting(
        factory=lambda: dict(values.DEFAULT_TAX_RATES),
        name="TAX_RATES",
        parse=values.tax_rates,
        render=values.render_tax_rates,
        doc="the tax rate per region, `region:rate,...`",
    )
    # Invoices and payment records are kept this long (tax and accounting law), then erased.
    legal_hold_years: int = setting(
        10,
        name="LEGAL_HOLD_YEARS",
        parse=values.number(int),
        doc="how long billing holds invoices and payment records (tax and accounting law)",
    )
    # Webhooks (gateway.webhooks): where a tenant's endpoints may be, how long a delivery is
    # retried, how long its log is kept.
    webhook_allow_http: bool = setting(
        False,
        name="WEBHOOK_ALLOW_HTTP",
        parse=values.flag,
        render=values.render_flag,
        doc="webhook URLs may be plain `http://` (development and tests; production refuses"
        " it); off: `https://` only",
    )
    webhook_allow_private: bool = setting(
        False,
        name="WEBHOOK_ALLOW_PRIVATE",
        parse=values.flag,
        render=values.render_flag,
        doc="webhook URLs may reach loopback, private, link-local, multicast and reserved"
        " addresses; off: refused at registration and at every delivery (DNS rebinding)",
    )
    webhook_retry_seconds: float = setting(
        30.0,
        name="WEBHOOK_RETRY_SECONDS",
        parse=values.number(float),
        doc="the wait before a failed webhook delivery's first retry; it doubles, up to an hour",
    )
    webhook_retry_hours: float = setting(
        24.0,
        name="WEBHOOK_RETRY_HOURS",
        parse=values.number(float),
        doc="how long a webhook delivery is retried before it is marked `failed` (dead-lettered)",
    )
    webhook_timeout_seconds: float = setting(
        10.0,
        name="WEBHOOK_TIMEOUT_SECONDS",
        parse=values.number(float),
        doc="a webhook delivery's whole exchange (resolve, connect, send, answer)",
    )
    webhook_secret_grace_hours: float = setting(
        24.0,
        name="WEBHOOK_SECRET_GRACE_HOURS",
        parse=values.number(float),
        doc="after a webhook secret is rotated, how long the one it replaced still signs"
        " deliveries beside it (a second `v1=`); then it is cleared",
    )
    webhook_log_days: float = setting(
        30.0,
        name="WEBHOOK_LOG_DAYS",
        parse=values.number(float),
        doc="days (of `LEDGERDESK_DAY_SECONDS`) a finished webhook delivery stays in its"
        " endpoint's log",
    )
    attachment_max_bytes: int = setting(
        10 << 20,
        name="ATTACHMENT_MAX_BYTES",
        parse=values.number(int),
        doc="the largest file one attachment may be, in bytes (413 past it)",
    )
    attachments_per_message: int = setting(
        10,
        name="ATTACHMENTS_PER_MESSAGE",
        parse=values.number(int),
        doc="how many attachments one message may carry (422 past it)",
    )
    attachment_ticket_bytes: int = setting(
        50 << 20,
        name="ATTACHMENT_TICKET_BYTES",
        parse=values.number(int),
        doc="the bytes of all of one ticket's attachments together, uploads not yet on a"
        " message included (413 past it)",
    )
    # Where attachments' sealed chunks live (services.tickets.chunk_store).
    attachment_store: str = setting(
        "database",
        name="ATTACHMENT_STORE",
        parse=values.lowered,
        doc="`database` (chunks as rows of tickets' own database) or `s3` (objects of an"
        " S3-compatible bucket, sealed the same way before they leave; docs/operations.md)",
    )
    attachment_s3_endpoint: str = setting(
        "",
        name="ATTACHMENT_S3_ENDPOINT",
        doc="the object store's URL (`https://...`); empty: AWS S3 of the region",
    )
    attachment_s3_bucket: str = setting(
        "",
        name="ATTACHMENT_S3_BUCKET",
        doc="the bucket attachments' chunks go to (created beforehand, versioning off or"
        " non-current versions expired by a lifecycle rule); needed with `s3`",
    )
    attachment_s3_region: str = setting(
        "us-east-1", name="ATTACHMENT_S3_REGION", doc="the bucket's region (signing needs one)"
    )
    attachment_s3_access_key_id: str = setting(
        DEV_S3_ACCESS_KEY_ID,
        name="ATTACHMENT_S3_ACCESS_KEY_ID",
        secret=True,
        shown="dev-insecure",
        doc="the object store's access key id; set empty (with the next), the SDK's own"
        " credentials (an instance's or a pod's role); production refuses the development"
        " value even with the `database` store, like every secret a process holds",
    )
    attachment_s3_secret_access_key: str = setting(
        DEV_S3_SECRET_ACCESS_KEY,
        name="ATTACHMENT_S3_SECRET_ACCESS_KEY",
        secret=True,
        shown="dev-insecure",
        doc="its secret access key, with `LEDGERDESK_ATTACHMENT_S3_ACCESS_KEY_ID`",
    )
    # Mail out (kernel.mail): the relay every mail goes through, who it is from, how long a
    # mail is retried and how long its row is kept after it went.
    smtp_host: str = setting(
        "127.0.0.1",
        name="SMTP_HOST",
        doc="the SMTP relay outbound mail goes through (`make run` starts a local sink)",
    )
    smtp_port: int = setting(
        8025, name="SMTP_PORT", parse=values.port, doc="its port (587 STARTTLS, 465 TLS, 25)"
    )
    smtp_security: str = setting(
        "none",
        name="SMTP_SECURITY",
        parse=values.lowered,
        doc="`starttls` (upgrade a plain connection, refused if the relay cannot), `tls`"
        " (implicit TLS from the first byte) or `none` (development, or a relay on the same"
        " machine; production refuses it for any other);"
        " the relay's certificate is verified against the system's authorities",
    )
    smtp_username: str = setting(
        "", name="SMTP_USERNAME", doc="the relay's user name; empty: no authentication"
    )
    smtp_password: str = setting(
        DEV_SMTP_PASSWORD,
        name="SMTP_PASSWORD",
        secret=True,
        shown="dev-insecure",
        doc="the relay's password, used with `LEDGERDESK_SMTP_USERNAME` (production needs it"
        " set like every secret, even for a relay without authentication, which never sees it)",
    )
    smtp_timeout_seconds: float = setting(
        30.0,
        name="SMTP_TIMEOUT_SECONDS",
        parse=values.number(float),
        doc="each step of an SMTP exchange; a claimed mail is due again three of these after"
        " its claim if its sender never recorded it",
    )
    mail_from: str = setting(
        "Ledgerdesk <support@ledgerdesk.localhost>",
        name="MAIL_FROM",
        doc="the `From` of every mail, and the envelope sender; its domain names Message-IDs",
    )
    console_url: str = setting(
        "http://127.0.0.1:8000/console",
        name="CONSOLE_URL",
        doc="the console's address as agents and admins reach it: the link in the notices"
        " mailed to them",
    )
    mail_retry_seconds: float = setting(
        60.0,
        name="MAIL_RETRY_SECONDS",
        parse=values.number(float),
        doc="the wait before a temporarily refused mail (4xx, no connection) is tried again;"
        " it doubles, up to an hour",
    )
    mail_retry_hours: float = setting(
        48.0,
        name="MAIL_RETRY_HOURS",
        parse=values.number(float),
        doc="how long a temporarily refused mail is retried before it is marked `failed`",
    )
    mail_keep_days: float = setting(
        7.0,
        name="MAIL_KEEP_DAYS",
        parse=values.number(float),
        doc="days (of `LEDGERDESK_DAY_SECONDS`) a sent or failed mail's row (ids and states;"
        " its sealed text is dropped when it finishes) is kept, then deleted",
    )
    # Mail in (kernel.mail.listener, in the tickets service): where the relay or the MX hands
    # mail over, the domain of the support addresses, and what a mail may be.
    mail_in_host: str = setting(
        "127.0.0.1",
        name="MAIL_IN_HOST",
        doc="the inbound mail listener's address (`0.0.0.0` in a container)",
    )
    mail_in_port: int = setting(
        2525,
        name="MAIL_IN_PORT",
        parse=values.port,
        doc="its port, shared by every tickets replica on a host (0: no listener)",
    )
    mail_in_protocol: str = setting(
        "smtp",
        name="MAIL_IN_PROTOCOL",
        parse=values.lowered,
        doc="`smtp` (pointed at by an MX or a relay's transport) or `lmtp` (a relay's local"
        " delivery, one reply per recipient)",
    )
    mail_in_domain: str = setting(
        "inbound.ledgerdesk.localhost",
        name="MAIL_IN_DOMAIN",
        parse=values.lowered,
        doc="the domain of every tenant's support address, `<tenant id>@` this; mail to any"
        " other domain is refused",
    )
    mail_in_max_bytes: int = setting(
        25 << 20,
        name="MAIL_IN_MAX_BYTES",
        parse=values.number(int),
        doc="the largest mail accepted, advertised as SIZE (552 past it)",
    )
    mail_in_max_recipients: int = setting(
        5,
        name="MAIL_IN_MAX_RECIPIENTS",
        parse=values.number(int),
        doc="recipients one mail may have here (452 past it)",
    )
    mail_in_max_parts: int = setting(
        100,
        name="MAIL_IN_MAX_PARTS",
        parse=values.number(int),
        doc="MIME parts one mail may have (554 5.6.0 past it)",
    )
    mail_in_max_depth: int = setting(
        8,
        name="MAIL_IN_MAX_DEPTH",
        parse=values.number(int),
        doc="how deep its MIME parts may nest (554 5.6.0 past it)",
    )
    mail_in_max_header_bytes: int = setting(
        64 << 10,
        name="MAIL_IN_MAX_HEADER_BYTES",
        parse=values.number(int),
        doc="the bytes of its header block (552 5.3.4 past it)",
    )
    # Per tickets process: a relay hands over many senders' mail, so its peer limit is generous;
    # one envelope sender's is what stops a flood of tickets from one address.
    mail_in_peer_rate: float = setting(
        20.0,
        name="MAIL_IN_PEER_RATE",
        parse=values.number(float),
        doc="mails per second, sustained, one peer (the relay's address) may hand over to one"
        " tickets process (451 4.7.1 past it)",
    )
    mail_in_peer_burst: int = setting(
        200, name="MAIL_IN_PEER_BURST", parse=values.number(int), doc="and its burst"
    )
    mail_in_sender_rate: float = setting(
        0.2,
        name="MAIL_IN_SENDER_RATE",
        parse=values.number(float),
        doc="mails per second, sustained, from one envelope sender to one tickets process"
        " (451 4.7.1 past it)",
    )
    mail_in_sender_burst: int = setting(
        20, name="MAIL_IN_SENDER_BURST", parse=values.number(int), doc="and its burst"
    )
    mail_in_dedup_days: float = setting(
        30.0,
        name="MAIL_IN_DEDUP_DAYS",
        parse=values.number(float),
        doc="days (of `LEDGERDESK_DAY_SECONDS`) a stored mail's idempotency record is kept: a"
        " relay re-sending it within them makes no second ticket",
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
                text = repr(values.masked_url(value))
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
        if self.log_level not in LOG_LEVELS:
            raise ConfigurationError("LEDGERDESK_LOG_LEVEL must be one of " + ", ".join(LOG_LEVELS))
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
        if self.environment == "production" and self.webhook_allow_http:
            # A webhook's body and signature would cross the network in clear.
            raise ConfigurationError("production refuses LEDGERDESK_WEBHOOK_ALLOW_HTTP")
        if self.smtp_security not in SMTP_SECURITY:
            raise ConfigurationError(
                "LEDGERDESK_SMTP_SECURITY must be one of " + ", ".join(SMTP_SECURITY)
            )
        if (
            self.environment == "production"
            and self.smtp_security == "none"
            and self.smtp_host not in ("127.0.0.1", "::1", "localhost")
        ):
            # Mail carries replies and addresses: never across the network in clear (a relay
            # on the same machine, a local MTA, may be spoken to in plain).
            raise ConfigurationError(
                "production refuses LEDGERDESK_SMTP_SECURITY=none to a relay on another"
                " machine: use starttls or tls"
            )
        if self.attachment_store not in ("database", "s3"):
            raise ConfigurationError("LEDGERDESK_ATTACHMENT_STORE must be database or s3")
        if self.attachment_store == "s3" and not self.attachment_s3_bucket:
            raise ConfigurationError(
                "LEDGERDESK_ATTACHMENT_STORE=s3 needs LEDGERDESK_ATTACHMENT_S3_BUCKET"
            )
        if bool(self.attachment_s3_access_key_id) != bool(self.attachment_s3_secret_access_key):
            raise ConfigurationError(
                "LEDGERDESK_ATTACHMENT_S3_ACCESS_KEY_ID and _SECRET_ACCESS_KEY go together:"
                " set both, or neither (the SDK's own credentials)"
            )
        if self.mail_in_protocol not in ("smtp", "lmtp"):
            raise ConfigurationError("LEDGERDESK_MAIL_IN_PROTOCOL must be smtp or lmtp")
        self._check_tls()
        if self.environment == "production":
            check_production_secrets(self)
        if self.audit_signing_key:
            seed_bytes(self.audit_signing_key)

    def _check_tls(self) -> None:
        uris = [uri.strip().lower() for uri in self.amqp_uri.split(";") if uri.strip()]
        if self.amqp_tls and not all(uri.startswith("amqps://") for uri in uris):
            # One connection's TLS options serve every URI it fails over to.
            raise ConfigurationError("LEDGERDESK_AMQP_URI mixes amqps:// and amqp:// URIs")
        tls_files = {
            "LEDGERDESK_AMQP_CA_FILE": self.amqp_ca_file,
            "LEDGERDESK_AMQP_CERT_FILE": self.amqp_cert_file,
            "LEDGERDESK_AMQP_KEY_FILE": self.amqp_key_file,
        }
        named = [name for name, path in tls_files.items() if path]
        if named and not self.amqp_tls:
            # The files would be ignored and the connection made in clear: refuse instead.
            raise ConfigurationError(
                f"{', '.join(named)} set but LEDGERDESK_AMQP_URI is not amqps://"
            )
        if bool(self.amqp_cert_file) != bool(self.amqp_key_file):
            raise ConfigurationError(
                "LEDGERDESK_AMQP_CERT_FILE and LEDGERDESK_AMQP_KEY_FILE go together"
            )
        if self.database_sslmode and self.database_sslmode not in SSLMODES:
            raise ConfigurationError(
                "LEDGERDESK_DATABASE_SSLMODE must be one of " + ", ".join(SSLMODES)
            )
        if bool(self.database_sslcert) != bool(self.database_sslkey):
            raise ConfigurationError(
                "LEDGERDESK_DATABASE_SSLCERT and LEDGERDESK_DATABASE_SSLKEY go together"
            )
        tls_files.update(
            {
                "LEDGERDESK_DATABASE_SSLROOTCERT": self.database_sslrootcert,
                "LEDGERDESK_DATABASE_SSLCERT": self.database_sslcert,
                "LEDGERDESK_DATABASE_SSLKEY": self.database_sslkey,
            }
        )
        for name, path in tls_files.items():
            # Named here rather than as an SSL error at the first connection, deep in a
            # library; the message names the setting and the path, never the file's content.
            if path and not os.access(path, os.R_OK):
                raise ConfigurationError(f"{name}: {path} is not a readable file")

    @property
    def audit_origin(self) -> str:
        """The name of this deployment's ledger in its signed checkpoints (the note's origin
        line and key name). It must not change once checkpoints are signed under it."""
        return self.audit_log_origin or values.default_audit_origin(self.database_prefix)

    @property
    def current_master_key_id(self) -> str:
        return next(iter(self.master_keys))

    def database_name(self, service: str, purpose: str = "") -> str:
        """``<prefix>_<service>`` for its data, ``<prefix>_<service>_keys`` for its keys."""
        return "_".join(filter(None, (self.database_prefix, service, purpose)))

    @property
    def server_dsn(self) -> str:
        """The server-level DSN with the TLS settings applied: what any connection to the
        server (creating databases, readiness) is made with, never the bare URL."""
        params = parse_dsn(self.database_url)
        params.update({key: value for key, value in self._database_tls().items() if value})
        return make_dsn(**params)

    def _database_tls(self) -> dict[str, str]:
        return {
            "sslmode": self.database_sslmode,
            "sslrootcert": self.database_sslrootcert,
            "sslcert": self.database_sslcert,
            "sslkey": self.database_sslkey,
        }

    def database_dsn(self, service: str, purpose: str = "") -> str:
        params = parse_dsn(self.server_dsn)
        params["dbname"] = self.database_name(service, purpose)
        return make_dsn(**params)

    @property
    def amqp_tls(self) -> bool:
        return self.amqp_uri.strip().lower().startswith("amqps://")

    def amqp_ssl(self) -> dict[str, Any] | None:
        """The ``ssl`` argument of a kombu Connection (and nameko's ``AMQP_SSL``): None for
        ``amqp://``; for ``amqps://`` the broker's certificate is verified, chain and name,
        and the client certificate presented if configured.

        A new dict per call: kombu writes the first broker's host name into the dict it is
        given (``server_hostname: None`` means "the host connected to"), so a dict shared by
        connections made from different URIs would check one broker's name on another."""
        if not self.amqp_tls:
            return None
        options: dict[str, Any] = {"server_hostname": None, "cert_reqs": ssl.CERT_REQUIRED}
        if self.amqp_ca_file:
            options["ca_certs"] = self.amqp_ca_file
        if self.amqp_cert_file:
            options["certfile"] = self.amqp_cert_file
            options["keyfile"] = self.amqp_key_file
        return options

    def with_overrides(self, **changes) -> Settings:
        return replace(self, **changes)

    def rpc_client_config(self) -> dict[str, Any]:
        """The config of a standalone nameko RPC client (``ClusterRpcProxy``): the broker and
        its TLS, as a service's own connections have them."""
        return {"AMQP_URI": self.amqp_uri, "AMQP_SSL": self.amqp_ssl()}

    def nameko_config(self) -> dict:
        """The dict a nameko container is started with; dependencies read ``LEDGERDESK``."""
        return {
            "AMQP_URI": self.amqp_uri,
            "AMQP_SSL": self.amqp_ssl(),
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
