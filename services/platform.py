"""The platform: which services exist, their topology, and ``make run``.

``python -m services.platform run`` checks RabbitMQ and PostgreSQL, creates and migrates every
service's databases, declares the broker topology, starts every service and the gateway as
processes, prints where to reach the gateway, and stops them all on Ctrl-C or SIGTERM.
``python -m services.platform dead-letters list|replay`` is ``kernel.deadletters``' command line
over the platform's queues.

Installed, this is the ``ledgerdesk`` command (pyproject's ``[project.scripts]``): ``ledgerdesk
run | prepare | dead-letters list|replay | send-mail SERVICE``. Exit status (``kernel.cli``): 0
done; 1 failed (a process stopped, a dead letter not replayable); 2 usage or configuration; 3
PostgreSQL or RabbitMQ unreachable.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from nameko.rpc import RPC_QUEUE_TEMPLATE

from kernel import cli, deadletters, platform, topology
from kernel.config import Settings
from kernel.db import DatabaseUnavailable, connect
from kernel.nameko_adapters.rpc_queues import declare_rpc_queues
from kernel.stores import prepare_databases

ROOT = Path(__file__).resolve().parent.parent

# name -> the nameko service class (``services.<name>.service:<Name>Service``), for each
# service of the platform's list; every service owns its databases and migrations folder.
SERVICES: dict[str, str] = {
    name: f"services.{name}.service:{name.capitalize()}Service" for name in platform.SERVICES
}
GATEWAY = "gateway.service:GatewayService"
# The router in front of the region cells (``make run`` starts one cell per region behind it).
ROUTER = "gateway.router"
# A cell's ops ports follow the previous cell's: room for every service and many gateways.
OPS_PORTS_PER_CELL = 20
# Whoever serves RPC: the services. (The gateway adds its own part to a data-subject export
# itself, rather than be asked back by RPC while it serves the download.)
RPC_SERVERS: tuple[str, ...] = tuple(SERVICES)


def subscriptions() -> list[topology.Subscription]:
    """Every consumer queue of the platform, from each service's ``subscriptions`` module and
    the gateway's."""
    found: list[topology.Subscription] = []
    for module_name in [f"services.{name}.subscriptions" for name in SERVICES] + [
        "gateway.subscriptions"
    ]:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        found.extend(module.SUBSCRIPTIONS)
    return found


def dead_letter_queues() -> list[str]:
    """Every queue of the platform whose dead letters an operator lists: the consumer queues,
    then the RPC queues (whose refused requests are listed, never replayed)."""
    return [s.queue for s in subscriptions()] + [
        RPC_QUEUE_TEMPLATE.format(service) for service in RPC_SERVERS
    ]


def migrations_of(name: str) -> Path | None:
    folder = ROOT / "services" / name / "migrations"
    return folder if folder.is_dir() else None


def check_dependencies(settings: Settings) -> list[str]:
    problems = []
    try:
        connect(settings.server_dsn, connect_timeout=3).close()
    except DatabaseUnavailable as exc:
        problems.append(f"{exc}\n  start it, or point LEDGERDESK_DATABASE_URL at one")
    from kombu import Connection

    try:
        with Connection(settings.amqp_uri, connect_timeout=3, ssl=settings.amqp_ssl()) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # any failure to connect is reported the same way
        host = settings.amqp_uri.rsplit("@", 1)[-1]
        problems.append(
            f"RabbitMQ is not reachable at {host}: {exc}\n"
            "  start it, or point LEDGERDESK_AMQP_URI at one"
        )
    return problems


def prepare(settings: Settings) -> None:
    """Databases and topology, before any process starts: nothing is published to no queue.
    RPC queues left classic by an older release become quorum queues here, their requests kept
    (refused while processes of that release still consume them), and dead-letter queues
    declared without the configured limits are replaced by ones with them, their messages kept
    (those past the TTL dropped, requests set aside by an older release emptied)."""
    for name in SERVICES:
        prepare_databases(settings, name, migrations_of(name))
    dead_letters = topology.DeadLetterLimits.of(settings)
    topology.declare(
        settings.amqp_uri,
        subscriptions(),
        settings.delivery_limit,
        dead_letters,
        resume=True,
        ssl=settings.amqp_ssl(),
    )
    declare_rpc_queues(
        settings.amqp_uri, RPC_SERVERS, dead_letters=dead_letters, ssl=settings.amqp_ssl()
    )


class ServiceProcess(subprocess.Popen):
    """A platform process, and the port its ops endpoints (/healthz, /readyz, /metrics) are on."""

    ops_port: int


def ops_ports(count: int, base: int | None) -> list[int]:
    """``base``, ``base + 1``, ... for a predictable ``make run``; else free ports (tests run many
    stacks at once, each process needs a port of its own)."""
    if base:
        return [base + n for n in range(count)]
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in ports:
            ports.append(port)
    return ports


def start_processes(
    env: dict[str, str] | None = None,
    gateway_processes: int | None = None,
    only: tuple[str, ...] | None = None,
    ops_port: int | None = None,
    log_dir: Path | None = None,
    amqp_uris: dict[str, str] | None = None,
) -> dict[str, subprocess.Popen]:
    """Every service once, and the gateway in several processes sharing its port (SO_REUSEPORT:
    the kernel spreads connections), since one eventlet process is bound to one core.

    Each process gets its own ops port: ``ops_port``, ``ops_port + 1``, ... in the order
    of ``SERVICES`` then the gateways, or free ones. With ``log_dir``, each process writes its
    log to ``<log_dir>/<name>.log`` instead of the launcher's stderr."""
    env = env if env is not None else os.environ.copy()
    if gateway_processes is None:
        gateway_processes = Settings.from_env(env, service="gateway").gateway_processes
    programs = {**SERVICES, **{f"gateway-{n}": GATEWAY for n in range(1, gateway_processes + 1)}}
    ports = dict(zip(programs, ops_ports(len(programs), ops_port), strict=True))
    if only is not None:
        programs = {name: path for name, path in programs.items() if name in only}
    processes: dict[str, subprocess.Popen] = {}
    for name, path in programs.items():
        log = open(log_dir / f"{name}.log", "ab") if log_dir is not None else None  # noqa: SIM115
        try:
            process = ServiceProcess(
                [sys.executable, "-m", "kernel.runner", path],
                cwd=ROOT,
                # Their own process group: Ctrl-C reaches the launcher only, which stops each
                # service with SIGTERM (graceful) rather than all of them racing on SIGINT.
                start_new_session=True,
                env={
                    **env,
                    "LEDGERDESK_OPS_PORT": str(ports[name]),
                    **(
                        {"LEDGERDESK_AMQP_URI": amqp_uris[kind]}
                        if amqp_uris is not None and (kind := name.split("-")[0]) in amqp_uris
                        else {}
                    ),
                },
                stderr=log,
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own descriptor
        process.ops_port = ports[name]
        processes[name] = process
    return processes


def stop_processes(processes: dict[str, subprocess.Popen], timeout: float = 20.0) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes.values():
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_ready(url: str, processes: dict[str, subprocess.Popen], timeout: float) -> bool:
    """The gateway's ``/readyz`` at ``url`` and every process's own (its ops port): the
    gateway's answers from one of the processes sharing its port, and each of them must be
    able to serve (a gateway process checks keys only once its credentials are in step)."""
    deadline = time.monotonic() + timeout
    ports = [getattr(p, "ops_port", 0) for p in processes.values()]
    pending = [url, *(f"http://127.0.0.1:{port}" for port in ports if port)]
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes.values()):
            return False
        pending = [at for at in pending if not _ready(at)]
        if not pending:
            return True
        time.sleep(0.3)
    return False


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# --- region cells ------------------------------------------------------------------------------


def cell_settings(settings: Settings, region: str, index: int) -> Settings:
    """The ``index``-th cell's settings, for ``region``: the platform's, with databases under
    ``<prefix>_<region>`` and the RabbitMQ vhost of that name, its sign-up taking ``region``
    only, and its gateway, ops and inbound mail ports after the router's and the previous
    cell's (a free one for each where the platform's is 0)."""
    prefix = f"{settings.database_prefix}_{region}"
    vhost = urllib.parse.quote(prefix, safe="")
    uris = ";".join(
        urllib.parse.urlunsplit(urllib.parse.urlsplit(uri)._replace(path="/" + vhost))
        for uri in settings.amqp_uri.split(";")
    )
    # The router is the cells' client: the address a cell's limits and access log take is the
    # one it forwards (X-Forwarded-For), not the router's own.
    trusted = tuple(dict.fromkeys((*settings.trusted_proxies, "127.0.0.1/32")))
    return settings.with_overrides(
        database_prefix=prefix,
        amqp_uri=uris,
        regions=(region,),
        gateway_port=settings.gateway_port + 1 + index,
        ops_port=settings.ops_port + OPS_PORTS_PER_CELL * index if settings.ops_port else 0,
        # The router's mail front takes the platform's port; each cell listens after it.
        mail_in_port=settings.mail_in_port + 1 + index if settings.mail_in_port else 0,
        trusted_proxies=trusted,
        # The cell's own master keys where the platform names them: its keystores are wrapped
        # under them (a tenant moved in is re-wrapped under them, services.tenant_move).
        **(
            {"master_keys": settings.cell_master_keys[region]}
            if region in settings.cell_master_keys
            else {}
        ),
    )


def cell_vhost(settings: Settings) -> str:
    """The RabbitMQ vhost a (cell's) settings name: the path of its first broker URI."""
    path = urllib.parse.urlsplit(settings.amqp_uri.split(";")[0]).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def ensure_vhost(settings: Settings) -> None:
    """The cell's vhost, created through the broker's management API, with every permission for
    the broker user of ``LEDGERDESK_AMQP_URI`` (creating an existing one changes nothing)."""
    import requests

    management = urllib.parse.urlsplit(settings.rabbit_management_url)
    base = f"{management.scheme}://{management.hostname}:{management.port or 15672}"
    auth = (management.username or "guest", management.password or "guest")
    vhost = urllib.parse.quote(cell_vhost(settings), safe="")
    user = urllib.parse.urlsplit(settings.amqp_uri.split(";")[0]).username or "guest"
    for path, body in (
        (f"/api/vhosts/{vhost}", None),
        (f"/api/permissions/{vhost}/{user}", {"configure": ".*", "write": ".*", "read": ".*"}),
    ):
        requests.put(base + path, json=body, auth=auth, timeout=30).raise_for_status()


def router_env(settings: Settings, cells: dict[str, Settings]) -> dict[str, str]:
    """The router's settings in front of ``cells`` on this machine: their gateways and mail
    listeners, and their databases' prefixes, where it reads the tenants each holds to keep
    its directory true (``gateway.directory_sync``)."""
    return {
        **settings.to_env(),
        "LEDGERDESK_CELLS": ",".join(
            f"{region}=http://127.0.0.1:{cell.gateway_port}" for region, cell in cells.items()
        ),
        "LEDGERDESK_CELLS_MAIL_IN": ",".join(
            f"{region}={cell.mail_in_protocol}://127.0.0.1:{cell.mail_in_port}"
            for region, cell in cells.items()
            if cell.mail_in_port
        ),
        "LEDGERDESK_CELLS_DATABASE_PREFIXES": ",".join(
            f"{region}={cell.database_prefix}" for region, cell in cells.items()
        ),
    }


def start_router(
    settings: Settings,
    cells: dict[str, Settings],
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> subprocess.Popen:
    """The router (``gateway.router``) as a process, on ``settings``' gateway port (and mail in
    port, handing mail on to the cells' listeners), in front of ``cells`` (region -> the cell's
    settings); its directory is ``<prefix>_directory``. With ``log_dir``, its log goes to
    ``<log_dir>/router.log``."""
    base = env if env is not None else os.environ.copy()
    log = open(log_dir / "router.log", "ab") if log_dir is not None else None  # noqa: SIM115
    try:
        return subprocess.Popen(
            [sys.executable, "-m", ROUTER],
            cwd=ROOT,
            start_new_session=True,
            env={**base, **router_env(settings, cells)},
            stderr=log,
        )
    finally:
        if log is not None:
            log.close()  # the child holds its own descriptor


def run_cells(settings: Settings, regions: tuple[str, ...]) -> int:
    """``make run`` with a cell per region on this machine (distinct databases and vhosts) and
    the router in front of them on the gateway's port."""
    problems = check_dependencies(settings)
    unknown = [region for region in regions if region not in settings.regions]
    if unknown:
        problems.append(f"no such region: {', '.join(unknown)} (LEDGERDESK_REGIONS)")
    if problems:
        print("Ledgerdesk cannot start:\n" + "\n".join(f"- {p}" for p in problems), file=sys.stderr)
        return cli.Exit.UNREACHABLE
    cells = {region: cell_settings(settings, region, n) for n, region in enumerate(regions)}
    for cell in cells.values():
        ensure_vhost(cell)
        prepare(cell)
    exits = contextlib.ExitStack()
    mail_note = _development_sink(settings, exits)
    processes: dict[str, subprocess.Popen] = {}
    urls = {region: f"http://127.0.0.1:{cell.gateway_port}" for region, cell in cells.items()}

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for region, cell in cells.items():
            started = start_processes({**os.environ, **cell.to_env()}, ops_port=cell.ops_port)
            processes.update({f"{region}/{name}": p for name, p in started.items()})
        processes["router"] = start_router(settings, cells)
        url = f"http://{settings.gateway_host}:{settings.gateway_port}"
        ready = all(
            wait_until_ready(
                urls[region],
                {n: p for n, p in processes.items() if n.startswith(f"{region}/")},
                timeout=90,
            )
            for region in cells
        ) and wait_until_ready(url, {"router": processes["router"]}, timeout=30)
        if not ready:
            failed = [n for n, p in processes.items() if p.poll() is not None]
            print(
                f"Ledgerdesk did not become ready (stopped: {', '.join(failed) or 'none'})",
                file=sys.stderr,
            )
            return 1
        print(f"\nLedgerdesk is running: {url}  (API spec: {url}/v1/openapi.json)")
        for region, cell in cells.items():
            ports = " ".join(
                f"{name.split('/')[1]}:{getattr(p, 'ops_port', '?')}"
                for name, p in processes.items()
                if name.startswith(f"{region}/")
            )
            mail_in = f"; mail in on {cell.mail_in_port}" if cell.mail_in_port else ""
            print(
                f"Cell {region}: gateway {urls[region]}, databases {cell.database_prefix}_*,"
                f" vhost {cell_vhost(cell)}{mail_in}; ops ports {ports}."
            )
        print(
            f"The router on {url} sends each request to its region's cell (docs/operations.md,"
            f' "Region cells").\n{mail_note}{_mail_in_note(settings)}Press Ctrl-C to stop.\n',
            flush=True,
        )
        while all(p.poll() is None for p in processes.values()):
            time.sleep(0.5)
        failed = [n for n, p in processes.items() if p.poll() is not None]
        print(f"stopping: {', '.join(failed)} exited", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping Ledgerdesk ...", flush=True)
        return 0
    finally:
        stop_processes(processes)
        exits.close()


def run(settings: Settings) -> int:
    problems = check_dependencies(settings)
    if problems:
        print("Ledgerdesk cannot start:\n" + "\n".join(f"- {p}" for p in problems), file=sys.stderr)
        return cli.Exit.UNREACHABLE
    prepare(settings)
    exits = contextlib.ExitStack()
    mail_note = _development_sink(settings, exits)
    processes = start_processes(ops_port=settings.ops_port)
    url = f"http://{settings.gateway_host}:{settings.gateway_port}"

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    # SIGINT explicitly too: a launcher started in the background inherits it ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if not wait_until_ready(url, processes, timeout=60):
            failed = [n for n, p in processes.items() if p.poll() is not None]
            print(
                f"Ledgerdesk did not become ready (stopped: {', '.join(failed) or 'none'})",
                file=sys.stderr,
            )
            return 1
        print(f"\nLedgerdesk is running: {url}  (API spec: {url}/v1/openapi.json)")
        ports = " ".join(f"{name}:{getattr(p, 'ops_port', '?')}" for name, p in processes.items())
        print(
            f"Services: {', '.join(SERVICES)}; gateway processes: "
            f"{sum(n.startswith('gateway') for n in processes)}.\n"
            f"Ops ports (/healthz /readyz /metrics): {ports}.\n{mail_note}{_mail_in_note(settings)}"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while all(p.poll() is None for p in processes.values()):
            time.sleep(0.5)
        failed = [n for n, p in processes.items() if p.poll() is not None]
        print(f"stopping: {', '.join(failed)} exited", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping Ledgerdesk ...", flush=True)
        return 0
    finally:
        stop_processes(processes)
        exits.close()


def _development_sink(settings: Settings, exits: contextlib.ExitStack) -> str:
    """Outside production, with the relay on this machine: a development SMTP sink there
    (``kernel.mail.sink``) writing every mail to ``var/mail/``; what to print about mail."""
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    if settings.environment == "production" or settings.smtp_host not in ("127.0.0.1", "localhost"):
        return f"Mail goes through the SMTP relay at {where}.\n"
    from kernel.mail import sink

    folder = ROOT / "var" / "mail"
    try:
        exits.enter_context(sink.running(settings.smtp_host, settings.smtp_port, folder))
    except OSError as exc:  # the port is taken: someone else's sink or relay is there
        return f"Mail goes to {where} (no development sink started: {type(exc).__name__}).\n"
    return f"Mail sent by the platform: {folder}/*.eml (a development SMTP sink on {where}).\n"


def _mail_in_note(settings: Settings) -> str:
    """Where inbound mail is taken (the tickets service's listener, ``kernel.mail.listener``)."""
    if not settings.mail_in_port:
        return "Mail in: no listener (LEDGERDESK_MAIL_IN_PORT=0).\n"
    return (
        f"Mail in: {settings.mail_in_protocol.upper()} on"
        f" {settings.mail_in_host}:{settings.mail_in_port}; a tenant's support address is"
        f" <tenant id>@{settings.mail_in_domain} (GET /v1/tenant shows it).\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "ledgerdesk"
    if argv[:1] == ["dead-letters"]:
        # The kernel's command line, given the platform's queues (the kernel knows no services).
        return deadletters.main(argv[1:], every=dead_letter_queues(), prog=f"{prog} dead-letters")
    if argv[:1] == ["send-mail"]:
        from kernel.mail import sender

        return cli.guarded(lambda: sender.main(argv[1:], prog=f"{prog} send-mail"))
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run and operate Ledgerdesk (the auditor's commands: ledgerdesk-audit).",
        epilog=cli.EXIT_CODES_HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run every service and the gateway")
    run_parser.add_argument(
        "--cells",
        default="",
        metavar="REGION,...",
        help="a cell per region (its own databases and vhost) behind the router; empty: one"
        " platform for every region",
    )
    sub.add_parser("prepare", help="create and migrate databases, declare the broker topology")
    sub.add_parser(
        "dead-letters",
        help="list and replay dead letters (dead-letters --help: how)",
        add_help=False,
    )
    sub.add_parser(
        "send-mail", help="send a service's queued mail (send-mail --help: how)", add_help=False
    )
    args = parser.parse_args(argv)
    cells = tuple(r.strip() for r in getattr(args, "cells", "").split(",") if r.strip())
    return cli.guarded(lambda: _run(args.command, cells))


def _run(command: str, cells: tuple[str, ...] = ()) -> int:
    # Preparing needs no secret (a prepare job is given none); running starts every process
    # here, each reading its own secrets from the environment handed on.
    settings = Settings.from_env(service="prepare" if command == "prepare" else None)
    if command == "prepare":
        prepare(settings)
        return cli.Exit.OK
    return run_cells(settings, cells) if cells else run(settings)


if __name__ == "__main__":
    sys.exit(main())
