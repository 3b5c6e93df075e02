"""Each process of the platform starts in production with only the secrets it uses, and an
operator token that is empty opens no operator route: real processes on the real PostgreSQL
and RabbitMQ."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from kernel.config import SERVICE_SECRETS
from kernel.signing import signer_from_config
from kernel.testing import Infrastructure, free_port, make_world, wait_until, world_env
from services import platform

# Long and random enough for production; none is a development value.
PRODUCTION_SECRETS = {
    "LEDGERDESK_MASTER_KEY": "prod-2026:" + base64.b64encode(os.urandom(32)).decode(),
    "LEDGERDESK_API_KEY_SECRET": base64.b64encode(os.urandom(32)).decode(),
    "LEDGERDESK_OPERATOR_TOKEN": base64.b64encode(os.urandom(32)).decode(),
    "LEDGERDESK_AUDIT_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
    "LEDGERDESK_SMTP_PASSWORD": base64.b64encode(os.urandom(32)).decode(),
    "LEDGERDESK_ATTACHMENT_S3_ACCESS_KEY_ID": base64.b64encode(os.urandom(15)).decode(),
    "LEDGERDESK_ATTACHMENT_S3_SECRET_ACCESS_KEY": base64.b64encode(os.urandom(30)).decode(),
}
# Public, not a secret: what the gateway publishes and the audit service must sign under.
AUDIT_PUBLIC_KEYS = json.dumps(
    [
        {
            "public_key": signer_from_config(
                PRODUCTION_SECRETS["LEDGERDESK_AUDIT_SIGNING_KEY"]
            ).public_key_b64,
            "valid_from": "1970-01-01T00:00:00+00:00",
            "valid_until": None,
        }
    ]
)
# The process names start_processes gives: each service, and one gateway.
PROCESSES = {**{name: name for name in platform.SERVICES}, "gateway-1": "gateway"}


def without_secrets(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in PRODUCTION_SECRETS}


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def started(tmp_path: Path) -> Iterator[dict]:
    processes: dict = {}
    yield processes
    platform.stop_processes(processes)


def log_of(log_dir: Path, name: str) -> str:
    path = log_dir / f"{name}.log"
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def test_every_process_starts_in_production_with_only_its_own_secrets(
    infrastructure: Infrastructure, started: dict, tmp_path: Path
):
    port = free_port()
    with make_world(infrastructure, LEDGERDESK_GATEWAY_PORT=str(port)) as settings:
        platform.prepare(settings)
        base = {
            **without_secrets(world_env(settings)),
            "LEDGERDESK_ENV": "production",
            "LEDGERDESK_AUDIT_PUBLIC_KEYS": AUDIT_PUBLIC_KEYS,
        }
        for process, service in PROCESSES.items():
            own = {
                f"LEDGERDESK_{name}": PRODUCTION_SECRETS[f"LEDGERDESK_{name}"]
                for name in SERVICE_SECRETS[service]
            }
            started.update(
                platform.start_processes(
                    {**base, **own}, gateway_processes=1, only=(process,), log_dir=tmp_path
                )
            )
        urls = {name: f"http://127.0.0.1:{p.ops_port}" for name, p in started.items()}
        urls["gateway-1 (http)"] = f"http://127.0.0.1:{port}"

        def all_ready() -> bool:
            exited = [n for n, p in started.items() if p.poll() is not None]
            assert not exited, {n: log_of(tmp_path, n) for n in exited}
            return all(ready(url) for url in urls.values())

        wait_until(all_ready, timeout=120, interval=0.5, what="every process ready")
        for name, process in started.items():
            assert process.poll() is None, log_of(tmp_path, name)
            assert "production refuses" not in log_of(tmp_path, name)


def test_an_empty_operator_token_opens_no_operator_route(
    infrastructure: Infrastructure, started: dict, tmp_path: Path
):
    port = free_port()
    with make_world(infrastructure, LEDGERDESK_GATEWAY_PORT=str(port)) as settings:
        platform.prepare(settings)
        env = {**world_env(settings), "LEDGERDESK_OPERATOR_TOKEN": ""}
        # Retention answers the route, and the gateway reads its log of forgetting at start;
        # accounts, whose credentials the gateway reconciles with before it serves.
        only = ("retention", "accounts", "gateway-1")
        started.update(
            platform.start_processes(env, gateway_processes=1, only=only, log_dir=tmp_path)
        )
        url = f"http://127.0.0.1:{port}"
        # Its ops port: the API's /readyz waits for every service, and only three run here.
        ops = f"http://127.0.0.1:{started['gateway-1'].ops_port}"
        wait_until(lambda: ready(ops), timeout=120, interval=0.5, what="the gateway ready")

        for header in ({"Authorization": "Bearer"}, {"Authorization": "Bearer "}, {}):
            response = requests.get(
                f"{url}/v1/operator/privacy/services", headers=header, timeout=15
            )
            assert response.status_code == 401, (header, response.status_code, response.text)
