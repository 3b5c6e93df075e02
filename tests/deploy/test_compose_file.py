"""docker-compose.yml: valid Compose, every service of the code in it, and secrets that are
development defaults production refuses."""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.directory_sync import cell_accounts_dsn
from kernel.config import (
    DEV_AUDIT_SIGNING_KEY,
    SECRET_FIELDS,
    SERVICE_SECRETS,
    ConfigurationError,
    Settings,
)
from kernel.signing import signer_from_config
from services import broker_definitions
from services.platform import GATEWAY, SERVICES

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# The compose services that run Ledgerdesk: every process, and the one-shot preparation, of the
# uk cell (named as the processes are) and of the in cell (their names ending -in), and the
# router in front of them. ROLE: which process each one is (kernel.config.SERVICE_SECRETS).
CELLS = {"uk": "", "in": "-in"}
ROLE = {
    **{
        f"{name}{suffix}": name
        for name in [*SERVICES, "gateway", "prepare"]
        for suffix in CELLS.values()
    },
    "router": "router",
}
PROCESSES = list(ROLE)
# Production values: long, random-looking, none a development value.
REAL = {
    "LEDGERDESK_ENV": "production",
    "LEDGERDESK_MASTER_KEY": "k1:" + base64.b64encode(bytes(range(32))).decode(),
    "LEDGERDESK_API_KEY_SECRET": "Jq8vX2mR7tLw0pZ4nC6yH1kB9sD3fG5a",
    "LEDGERDESK_OPERATOR_TOKEN": "uE3rT7yW1qZ9xC5vB2nM8kL4jH6gF0dS",
    "LEDGERDESK_AUDIT_SIGNING_KEY": base64.b64encode(bytes(range(1, 33))).decode(),
    "LEDGERDESK_SMTP_PASSWORD": "Rk7wQ2pZ9xL4vN1cT6yB3mH8jD5sF0gA",
    "LEDGERDESK_ATTACHMENT_S3_ACCESS_KEY_ID": "AKIA7QX2M4PZ9LKV3TNB",
    "LEDGERDESK_ATTACHMENT_S3_SECRET_ACCESS_KEY": "v8Lq2Xz7Pm4Kt9Rw1Bn6Cy3Hd5Gf0Js2Ua8Ek4Oi",
    "POSTGRES_PASSWORD": "Hq3nV8xK2pW7",
    # The broker's users and passwords are the deployment's (compose reads these variables).
    **{
        f"LEDGERDESK_{cell}AMQP_URI{process}": "amqp://ledgerdesk-x:Tz5mQ9wL4r@rabbitmq:5672/"
        for cell in ("", "IN_")
        for process in ("", "_ACCOUNTS", "_AUDIT", "_BILLING", "_GATEWAY", "_RETENTION", "_TICKETS")
    },
}


@functools.cache
def _compose() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load((ROOT / "docker-compose.yml").read_text(), Loader=loader)


def compose() -> dict[str, Any]:
    """A fresh copy, so a test that edits it edits its own."""
    return copy.deepcopy(_compose())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME-default}``, as it would run."""

    def one(match: re.Match[str]) -> str:
        name, op, default = match.group(1), match.group(2), match.group(3) or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    return re.sub(r"\$\{(\w+)(?:(:?-)([^}]*))?\}", one, value)


def environment_of(service: str, env: dict[str, str]) -> dict[str, str]:
    raw = compose()["services"][service]["environment"]
    return {name: interpolate(str(value), env) for name, value in raw.items()}


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((HERE / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []
    # The schema does refuse what Compose refuses, so the empty list above means something.
    broken = compose()
    broken["services"]["tickets"]["command_line"] = "typo"
    assert list(validator.iter_errors(broken))


def test_every_process_of_the_platform_is_a_compose_service_running_its_class() -> None:
    services = compose()["services"]
    for suffix in CELLS.values():
        for name, path in {**SERVICES, "gateway": GATEWAY}.items():
            name += suffix
            assert services[name]["command"] == ["kernel.runner", path], name
            assert services[name]["build"] == "."
            depends = services[name]["depends_on"]
            assert depends[f"prepare{suffix}"] == {"condition": "service_completed_successfully"}
            assert depends["rabbitmq"] == {"condition": "service_healthy"}
            assert depends["postgres"] == {"condition": "service_healthy"}
        assert services[f"prepare{suffix}"]["command"] == ["services.platform", "prepare"]
        assert services[f"prepare{suffix}"]["restart"] == "no"
    assert services["router"]["command"] == ["gateway.router"]
    images = {services[name]["image"] for name in PROCESSES}
    assert len(images) == 1, "one image for every process"


def test_each_cell_has_its_region_databases_and_vhost_and_the_router_reaches_both() -> None:
    seen = {}
    for region, suffix in CELLS.items():
        names = [f"{name}{suffix}" for name in [*SERVICES, "gateway", "prepare"]]
        cell = [Settings.from_env(environment_of(name, {})) for name in names]
        # Each process its own broker user, all of them in the cell's vhost.
        ((regions, prefix, vhost),) = {
            (s.regions, s.database_prefix, urllib.parse.urlsplit(s.amqp_uri).path) for s in cell
        }
        assert regions == (region,)
        seen[region] = (prefix, vhost)
    assert len(set(seen.values())) == len(CELLS), seen
    assert len({prefix for prefix, _ in seen.values()}) == len(CELLS)
    assert len({vhost for _, vhost in seen.values()}) == len(CELLS)
    router = Settings.from_env(environment_of("router", {}), service="router")
    services = compose()["services"]
    assert list(router.cells) == list(router.cells_mail_in) == list(CELLS)
    for region, suffix in CELLS.items():
        assert urllib.parse.urlsplit(router.cells[region]).hostname == f"gateway{suffix}"
        assert urllib.parse.urlsplit(router.cells_mail_in[region]).hostname == f"tickets{suffix}"
        assert services[f"tickets{suffix}"]["expose"] == ["2525"]
        # Its directory's reconciliation reads the cell's own accounts database.
        cell_accounts = Settings.from_env(environment_of(f"accounts{suffix}", {}))
        assert cell_accounts_dsn(router, region) == cell_accounts.database_dsn("accounts")
    assert router.database_prefix not in {prefix for prefix, _ in seen.values()}


def test_services_can_be_scaled_and_only_the_router_publishes_a_port() -> None:
    services = compose()["services"]
    for name in PROCESSES:
        # A fixed host port or container name would make `--scale NAME=3` fail; the gateways
        # are reached through the router.
        if name != "router":
            assert "ports" not in services[name], name
        assert "container_name" not in services[name], name
    assert [p.rsplit(":", 1)[-1] for p in services["router"]["ports"]] == ["8000"]
    for name in ("gateway", "gateway-in", "router"):
        assert environment_of(name, {})["LEDGERDESK_GATEWAY_HOST"] == "0.0.0.0"


def test_infrastructure_is_healthy_before_services_start_and_traces_reach_jaeger() -> None:
    services = compose()["services"]
    for name in ("postgres", "rabbitmq"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    for volume in services["rabbitmq"]["volumes"] + services["otel-collector"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).is_file(), source
    collector = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    pipeline = collector["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        for component in pipeline[kind]:
            assert component in collector[kind], component
    exporter = collector["exporters"][pipeline["exporters"][0]]["endpoint"]
    assert exporter.split(":")[0] in services, "the collector exports to a compose service"
    endpoint = urllib.parse.urlsplit(environment_of("tickets", {})["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname == "otel-collector" and endpoint.hostname in services
    receiver = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert receiver.rsplit(":", 1)[-1] == str(endpoint.port) == "4318"


def test_each_service_is_given_exactly_the_secrets_it_uses() -> None:
    for name in PROCESSES:
        env = environment_of(name, {})
        given = {v.removeprefix("LEDGERDESK_") for v in env} & set(SECRET_FIELDS)
        assert given == SERVICE_SECRETS[ROLE[name]], name
    assert "LEDGERDESK_AUDIT_SIGNING_KEY" not in environment_of("gateway", {})


def test_the_gateway_is_given_the_audit_public_key_of_the_development_seed() -> None:
    (key,) = json.loads(environment_of("gateway", {})["LEDGERDESK_AUDIT_PUBLIC_KEYS"])
    assert key == {
        "public_key": signer_from_config(DEV_AUDIT_SIGNING_KEY).public_key_b64,
        "valid_from": "1970-01-01T00:00:00+00:00",
        "valid_until": None,
    }


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_compose_defaults_are_the_marked_dev_secrets_that_production_refuses(name: str) -> None:
    role = ROLE[name]
    own = SERVICE_SECRETS[role]
    defaults = Settings.from_env(environment_of(name, {}), service=role)
    dev = Settings()
    for secret in own:
        field = SECRET_FIELDS[secret]
        assert getattr(defaults, field) == getattr(dev, field), secret

    if own:
        with pytest.raises(ConfigurationError) as refused:
            Settings.from_env(environment_of(name, {"LEDGERDESK_ENV": "production"}), service=role)
        # The connections' development passwords are refused with every process's secrets.
        refused_names = [*(n for n in SECRET_FIELDS if n in own), "AMQP_URI", "DATABASE_URL"]
        assert str(refused.value) == "production refuses development secrets: set " + ", ".join(
            f"LEDGERDESK_{n}" for n in refused_names
        )

    settings = Settings.from_env(environment_of(name, REAL), service=role)
    assert settings.environment == "production" and settings.held_secrets == own


def _opens(users: dict, url: urllib.parse.SplitResult) -> None:
    """The URL's user is in dev-users.json, and its password is the one the hash was made of."""
    assert url.hostname == "rabbitmq" and url.password and "dev-insecure" in url.password
    (user,) = [u for u in users["users"] if u["name"] == url.username]
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    stored = base64.b64decode(user["password_hash"])
    salt, digest = stored[:4], stored[4:]
    assert hashlib.sha256(salt + url.password.encode()).digest() == digest


def test_each_process_connects_as_its_own_least_privileged_broker_user() -> None:
    """The prepare job declares the topology as the administrator; every other process has its
    own user, whose development password dev-users.json sets and whose permissions are the
    definitions' (services.broker_definitions.permissions). No process holds the management
    API's administrator URL."""
    users = json.loads((ROOT / "deploy" / "rabbitmq" / "dev-users.json").read_text())
    topology = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    admin = urllib.parse.urlsplit(environment_of("prepare", {})["LEDGERDESK_AMQP_URI"])
    _opens(users, admin)
    for grant in [p for p in users["permissions"] if p["user"] == admin.username]:
        assert grant["configure"] == grant["write"] == grant["read"] == ".*"
    # The uk cell's vhost is the definitions' ("/"); the in cell's grants are dev-users.json's.
    grants = topology["permissions"] + users["permissions"]
    topics = topology["topic_permissions"] + users["topic_permissions"]
    for name in broker_definitions.PROCESSES:
        for service in (name, f"{name}-in"):
            env = environment_of(service, {})
            assert "LEDGERDESK_RABBIT_MANAGEMENT_URL" not in env, service
            url = urllib.parse.urlsplit(env["LEDGERDESK_AMQP_URI"])
            assert url.username == broker_definitions.user_of(name), service
            _opens(users, url)
            vhost = urllib.parse.unquote(url.path.lstrip("/") or "/")
            assert {"name": vhost} in users["vhosts"], service
            (grant,) = [p for p in grants if (p["user"], p["vhost"]) == (url.username, vhost)]
            expected = broker_definitions.permissions(name)
            assert (grant["configure"], grant["write"], grant["read"]) == (
                expected.configure,
                expected.write,
                expected.read,
            ), service
            given = sorted(
                (t["exchange"], t["write"], t["read"])
                for t in topics
                if (t["user"], t["vhost"]) == (url.username, vhost)
            )
            assert given == sorted(
                (t.exchange, t.write, t.read) for t in broker_definitions.topic_permissions(name)
            ), service


class _Recording(dict):
    """An environment that remembers every name asked of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_every_ledgerdesk_variable_in_compose_is_one_the_code_reads(name: str) -> None:
    # Read as the service reads it: a secret it was given but does not read is found too.
    env = _Recording(environment_of(name, {}))
    Settings.from_env(env, service=ROLE[name])
    given = {n for n in env if n.startswith("LEDGERDESK_")}
    assert given <= env.asked, f"not read by Settings: {sorted(given - env.asked)}"


def test_the_compose_delivery_limit_is_the_one_the_broker_definitions_hold() -> None:
    definitions = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    limits = {q["arguments"].get("x-delivery-limit") for q in definitions["queues"]} - {None}
    assert limits == {Settings.from_env(environment_of("tickets", {})).delivery_limit}


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_the_log_level_is_set_from_the_environment_compose_runs_in(name: str) -> None:
    assert Settings.from_env(environment_of(name, {}), service=ROLE[name]).log_level == "info"
    env = environment_of(name, {"LEDGERDESK_LOG_LEVEL": "debug"})
    assert Settings.from_env(env, service=ROLE[name]).log_level == "debug"


def test_the_infrastructure_images_are_supported_releases_pinned_to_a_patch() -> None:
    services = compose()["services"]
    name, _, tag = services["rabbitmq"]["image"].partition(":")
    version = re.match(r"(\d+)\.(\d+)\.(\d+)-management$", tag)
    assert name == "rabbitmq" and version, tag
    # 3.13 is out of community support: a 4.x release.
    assert int(version[1]) >= 4, tag
    # Jaeger v1 (all-in-one) is no longer released; v2 is one image.
    name, _, tag = services["jaeger"]["image"].partition(":")
    assert name == "jaegertracing/jaeger" and re.fullmatch(r"2\.\d+\.\d+", tag), tag
    assert services["jaeger"]["environment"]["JAEGER_LISTEN_HOST"] == "0.0.0.0"


def test_the_broker_permits_the_transient_reply_queues_the_gateway_declares() -> None:
    """RabbitMQ 4.3 refuses non-durable, non-exclusive queues unless permitted: the gateway's
    RPC reply queue (kernel/nameko_adapters/proxy.py) is one, so the configuration the compose
    file mounts must permit it."""
    mounted = [
        volume.split(":")[0]
        for volume in compose()["services"]["rabbitmq"]["volumes"]
        if volume.split(":")[1].startswith("/etc/rabbitmq/conf.d/")
    ]
    (conf,) = mounted
    settings = dict(
        (part.strip() for part in line.split("=", 1))
        for line in (ROOT / conf).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert settings["deprecated_features.permit.transient_nonexcl_queues"] == "true"


def test_the_cells_gateways_trust_the_router_on_the_compose_network_only() -> None:
    """Behind the router every request comes from it: the gateways trust its X-Forwarded-For,
    and only on the compose network's own fixed range."""
    (subnet,) = [c["subnet"] for c in compose()["networks"]["default"]["ipam"]["config"]]
    for name in ("gateway", "gateway-in"):
        assert environment_of(name, {})["LEDGERDESK_TRUSTED_PROXIES"] == subnet, name
