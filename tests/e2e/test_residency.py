"""Data residency: two region cells behind the router, and nothing of a tenant outside its cell.

Each cell is a whole platform (every service and its gateway, as processes) in a world of its
own (databases under its prefix, its own RabbitMQ vhost) taking sign-ups of its region only;
the router runs in a third world (its directory's database). A tenant signs up in each region
through the router and writes through the main endpoints; then every row of every database
and every message of every queue of the other cell is searched for the tenant's id, its
agents' and contacts' ids, e-mails and names: none may be there. The same search of the
tenant's own cell must find them, or the sweep proves nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import smtplib
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kombu import Connection, Exchange, Queue, binding

from kernel.config import Settings
from kernel.testing import Infrastructure, free_port, make_world, wait_until, world_env
from kernel.topology import EVENTS_EXCHANGE
from services import platform
from tests.e2e.conftest import SIGNUP
from tests.e2e.helpers import completed, ok
from tests.support import sweep

REGIONS = ("uk", "in")
# A queue in each cell bound to every event before any service starts, left unread: what the
# cell published stays there for the sweep (the services' own queues are drained as they go).
TAP = "e2e.residency.published"


def tap(settings: Settings) -> None:
    every_event = binding(Exchange(EVENTS_EXCHANGE, type="topic", durable=True), "#")
    with Connection(settings.amqp_uri, connect_timeout=5) as conn:
        Queue(TAP, bindings=[every_event], durable=True)(conn.channel()).declare()


class Cells:
    def __init__(
        self, router_url: str, cells: dict[str, Settings], router: Settings, log: Path
    ) -> None:
        self.url = router_url
        self.cells = cells
        self.router = router
        self.log = log  # the router's

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any):
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)


@contextlib.contextmanager
def running_cells(
    infrastructure: Infrastructure,
    log_dir: Path,
    as_platform_makes_them: bool = False,
    **router_overrides: str,
) -> Iterator[Cells]:
    """Two cells and the router. ``as_platform_makes_them``: the cells derived from the
    router's world as ``make run --cells`` derives them (``platform.cell_settings``: databases
    under ``<prefix>_<region>``, a vhost of that name), for tools that find cells so (the
    tenant mover); else each cell a world of its own. ``router_overrides``: settings of the
    router's world (and so of cells derived from it)."""
    with contextlib.ExitStack() as stack:
        cells: dict[str, Settings] = {}
        processes: dict[str, subprocess.Popen] = {}
        router_port = free_port()
        router = stack.enter_context(
            make_world(
                infrastructure,
                LEDGERDESK_GATEWAY_PORT=str(router_port),
                LEDGERDESK_MAIL_IN_PORT=str(free_port()),
                **({"LEDGERDESK_REGIONS": ",".join(REGIONS)} if as_platform_makes_them else {}),
                **router_overrides,
            )
        )
        for n, region in enumerate(REGIONS):
            if as_platform_makes_them:
                cell = platform.cell_settings(router, region, n).with_overrides(
                    gateway_port=free_port(), mail_in_port=free_port()
                )
                platform.ensure_vhost(cell)
                # The router's world drops the cell's databases (its prefix's); not its vhost.
                stack.callback(
                    infrastructure.management,
                    "DELETE",
                    f"/api/vhosts/{urllib.parse.quote(platform.cell_vhost(cell), safe='')}",
                )
                cells[region] = cell
                continue
            cells[region] = stack.enter_context(
                make_world(
                    infrastructure,
                    LEDGERDESK_GATEWAY_PORT=str(free_port()),
                    LEDGERDESK_REGIONS=region,
                    LEDGERDESK_MAIL_IN_PORT=str(free_port()),
                )
            )
        stack.callback(platform.stop_processes, processes)
        for region, settings in cells.items():
            platform.prepare(settings)
            tap(settings)
            started = platform.start_processes(world_env(settings), gateway_processes=1)
            processes.update({f"{region}/{name}": p for name, p in started.items()})
        urls = {region: f"http://127.0.0.1:{s.gateway_port}" for region, s in cells.items()}
        processes["router"] = platform.start_router(
            router, cells, env=world_env(router), log_dir=log_dir
        )
        for region in REGIONS:
            own = {n: p for n, p in processes.items() if n.startswith(f"{region}/")}
            assert platform.wait_until_ready(urls[region], own, timeout=90), f"no {region} cell"
        router_url = f"http://127.0.0.1:{router_port}"
        assert platform.wait_until_ready(router_url, {"router": processes["router"]}, timeout=30), (
            "no router"
        )
        yield Cells(router_url, cells, router, log_dir / "router.log")


@pytest.fixture(scope="module")
def cells(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cells]:
    with running_cells(infrastructure, tmp_path_factory.mktemp("router")) as running:
        yield running


def populate(cells: Cells, region: str) -> dict[str, Any]:
    """A tenant of ``region`` and what it writes through the router; what names it."""
    tag = secrets.token_hex(4)
    admin = {"name": f"Admin{region}{tag}", "email": f"admin.{region}.{tag}@example.com"}
    created = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": region, "admin": admin})
    assert created.status_code == 201, created.text
    signup = created.json()
    assert signup["tenant"]["region"] == region
    key = signup["api_key"]
    assert key.startswith(f"ldk_{region}_"), "a key issued now names its region"
    agent = ok(
        cells.call(
            "POST",
            "/v1/agents",
            key=key,
            json={
                "name": f"Agent{region}{tag}",
                "email": f"agent.{region}.{tag}@example.com",
                "role": "agent",
            },
        ),
        201,
    )
    contact = ok(
        cells.call(
            "POST",
            "/v1/contacts",
            key=key,
            json={"name": f"Contact{region}{tag}", "email": f"contact.{region}.{tag}@example.com"},
        ),
        201,
    )
    ticket = ok(
        cells.call(
            "POST",
            "/v1/tickets",
            key=key,
            json={
                "subject": f"Printer{region}{tag} jams",
                "body": f"Help from Contact{region}{tag}",
                "requester_id": contact["id"],
            },
        ),
        201,
    )
    ok(
        cells.call(
            "POST",
            f"/v1/tickets/{ticket['id']}/messages",
            key=key,
            json={"body": f"Reply to Contact{region}{tag}"},
        ),
        201,
    )
    wait_until(
        lambda: (
            cells.call("GET", "/v1/search", key=key, params={"q": f"Printer{region}{tag}"})
            .json()
            .get("items")
        ),
        timeout=30,
        what="the ticket found by search",
    )
    filed = ok(
        cells.call(
            "POST",
            "/v1/privacy/requests",
            key=key,
            json={"type": "access", "subject": {"contact_id": contact["id"]}},
        ),
        202,
    )
    # ``completed`` asks for the request through ``call``, as of a stack.
    assert completed(cells, key, filed["id"])["status"] == "completed"  # type: ignore[arg-type]
    export = ok(cells.call("POST", "/v1/tenant/exports", key=key), 202)
    ready = wait_until(
        lambda: (lambda e: e if e["status"] == "ready" else None)(
            ok(cells.call("GET", f"/v1/tenant/exports/{export['id']}", key=key))
        ),
        timeout=90,
        what="the tenant's export",
    )
    archive = cells.call("GET", f"/v1/tenant/exports/{export['id']}/archive", key=key)
    assert archive.status_code == 200 and len(archive.content) == ready["bytes"]
    assert archive.headers["X-Request-Id"], "the cell's headers pass through the router"
    tenant_id = signup["tenant"]["id"]
    ids = [tenant_id, signup["agent"]["id"], agent["id"], contact["id"], ticket["id"]]
    return {
        "region": region,
        "tenant_id": tenant_id,
        "key": key,
        # Ids as written, e-mails, names; and the ids without dashes, looked for abroad only.
        "hex_ids": [uuid.UUID(i).hex for i in ids],
        "canaries": [
            *ids,
            admin["email"],
            agent["email"],
            contact["email"],
            admin["name"],
            agent["name"],
            contact["name"],
        ],
    }


def found(infrastructure: Infrastructure, settings: Settings, canaries: list[str]) -> dict:
    texts = [
        *sweep.database_texts(settings),
        *sweep.queue_texts(infrastructure, settings, every=10_000),
    ]
    return sweep.find(canaries, texts)


def test_each_tenant_is_in_its_own_cell_and_nowhere_in_the_other(
    cells: Cells, infrastructure: Infrastructure
) -> None:
    tenants = {region: populate(cells, region) for region in REGIONS}

    for region, tenant in tenants.items():
        (other,) = (r for r in REGIONS if r != region)
        at_home = found(infrastructure, cells.cells[region], tenant["canaries"])
        # The sweep can find: every id, e-mail and name is somewhere in the tenant's own cell
        # (the e-mails and names under the subjects' keys in events, in plaintext in read
        # models), and the events it published are in the cell's own queue.
        assert set(at_home) == set(tenant["canaries"]), set(tenant["canaries"]) - set(at_home)
        assert any(place[0] == "queue" for place in at_home[tenant["tenant_id"]]), at_home
        abroad = found(infrastructure, cells.cells[other], tenant["canaries"] + tenant["hex_ids"])
        assert abroad == {}, f"{region}'s tenant found in the {other} cell: {abroad}"
        # The directory, the one thing outside the cells, holds the id and region only.
        assert (
            sweep.find(
                tenant["canaries"][1:] + tenant["hex_ids"][1:], sweep.database_texts(cells.router)
            )
            == {}
        ), "only the tenant's id is kept outside its cell"
        assert tenant["tenant_id"] in sweep.find(
            [tenant["tenant_id"]], sweep.database_texts(cells.router)
        )
        # The router's log: routing and ids, never a key, an e-mail or a name.
        logged = sweep.find(tenant["canaries"][5:] + [tenant["key"]], sweep.file_texts([cells.log]))
        assert logged == {}, logged
    assert "routed method=POST region=in status=201" in cells.log.read_text()


def test_requests_route_by_key_and_unknown_regions_are_refused(cells: Cells) -> None:
    refused = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": "sg"})
    assert refused.status_code == 422
    assert refused.headers["Content-Type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "/docs/problems#validation-failed"
    assert problem["errors"] == {"region": ["must be one of: uk, in"]}
    assert refused.headers["X-Request-Id"] == problem["request_id"]

    foreign_key = "ldk_sg_" + secrets.token_urlsafe(32)
    unknown = cells.call("GET", "/v1/tenant", key=foreign_key)
    assert unknown.status_code == 401 and unknown.json()["type"] == "/docs/problems#unauthorized"
    assert "region" in unknown.json()["detail"]

    # A cell's own sign-up takes its region only, even when reached without the router.
    direct = requests.post(
        f"http://127.0.0.1:{cells.cells['uk'].gateway_port}/v1/signup",
        json={**SIGNUP, "region": "in"},
        timeout=30,
    )
    assert direct.status_code == 422 and "region" in direct.json()["errors"]

    # Unauthenticated static routes answer from a cell, headers and bodies intact.
    spec = cells.call("GET", "/v1/openapi.json")
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.")
    assert spec.headers["X-Request-Id"]
    assert cells.call("GET", "/healthz").status_code == 200

    # A key of one region answers with its own tenant; a tenant of each is seen through its
    # key only from its own cell.
    uk = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": "uk"}).json()
    india = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": "in"}).json()
    assert ok(cells.call("GET", "/v1/tenant", key=uk["api_key"]))["id"] == uk["tenant"]["id"]
    assert ok(cells.call("GET", "/v1/tenant", key=india["api_key"]))["region"] == "in"
    in_gateway = f"http://127.0.0.1:{cells.cells['in'].gateway_port}"
    elsewhere = requests.get(
        f"{in_gateway}/v1/tenant",
        headers={"Authorization": f"Bearer {uk['api_key']}"},
        timeout=30,
    )
    assert elsewhere.status_code == 401, "the in cell knows nothing of the uk tenant's key"
    # A problem from a cell passes through as the cell wrote it.
    missing = cells.call("GET", f"/v1/contacts/{uuid.uuid4()}", key=uk["api_key"])
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "application/problem+json"
    assert missing.json()["request_id"] == missing.headers["X-Request-Id"]
    assert json.loads(missing.content)["type"] == "/docs/problems#not-found"


def test_mail_to_a_support_address_goes_to_its_tenants_cell(cells: Cells) -> None:
    uk = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": "uk"}).json()
    india = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": "in"}).json()
    domain = cells.router.mail_in_domain
    subject = f"Mail{secrets.token_hex(4)}"
    mail = (
        f"From: Dev <dev.{subject}@example.com>\r\nTo: support@{domain}\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{subject}@example.com>\r\n\r\nIt broke.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", cells.router.mail_in_port, timeout=30) as front:
        front.ehlo()
        assert front.mail(f"dev.{subject}@example.com")[0] == 250
        assert front.rcpt(f"{india['tenant']['id']}@{domain}")[0] == 250
        # One recipient a mail, whatever its region: the rest are deferred, to be sent again
        # (answering by region would tell whether two tenants share one).
        assert front.rcpt(f"{uk['tenant']['id']}@{domain}")[0] == 452
        assert front.rcpt(f"{uuid.uuid4()}@{domain}")[0] == 452
        assert front.data(mail.encode())[0] == 250

    def ticketed() -> list:
        listed = ok(cells.call("GET", "/v1/tickets", key=india["api_key"]))["items"]
        return [t for t in listed if t["subject"] == subject]

    wait_until(ticketed, timeout=30, what="the mailed ticket in the in cell")
    assert ok(cells.call("GET", "/v1/tickets", key=uk["api_key"]))["items"] == []


def test_a_file_goes_up_and_comes_down_through_the_router_byte_for_byte(cells: Cells) -> None:
    key = cells.call("POST", "/v1/signup", json={**SIGNUP, "region": "in"}).json()["api_key"]
    contact = ok(
        cells.call("POST", "/v1/contacts", key=key, json={"name": "C", "email": "c@example.com"}),
        201,
    )
    body = {"subject": "Lamp", "body": "photo", "requester_id": contact["id"]}
    ticket = ok(cells.call("POST", "/v1/tickets", key=key, json=body), 201)
    data = secrets.token_bytes(2 * 256 * 1024 + 1234)
    uploaded = ok(
        cells.call(
            "POST",
            f"/v1/tickets/{ticket['id']}/attachments",
            key=key,
            params={"filename": "lamp.bin"},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        ),
        201,
    )
    assert uploaded["sha256"] == hashlib.sha256(data).hexdigest()
    got = cells.call(
        "GET", f"/v1/tickets/{ticket['id']}/attachments/{uploaded['id']}", key=key, stream=True
    )
    assert got.status_code == 200 and got.headers["X-Request-Id"]
    assert b"".join(got.iter_content(64 * 1024)) == data
