"""Brokers and databases of the suite's own, so faults never touch the shared services.

A fault test stops and starts RabbitMQ or PostgreSQL under load; doing that to the servers
every other test (and CI) uses would break them. So each fault test starts its own: a RabbitMQ
node (or a cluster of three) from the installed ``rabbitmq-server``, or a PostgreSQL cluster
from the installed ``initdb``/``pg_ctl``, on free loopback ports, with data in a temporary
directory. ``Infrastructure`` for them plugs into ``running_stack`` like the shared one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kernel.testing import Infrastructure, free_port, wait_until
from tests.support.certs import Issued


def _rabbit_bin() -> Path:
    # The packaged /usr/sbin wrappers switch to the rabbitmq user and its home (cookie, logs):
    # the scripts behind them honour our environment as they are.
    for folder in ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin"):
        if Path(folder, "rabbitmq-server").exists():
            return Path(folder)
    found = shutil.which("rabbitmq-server")
    if found is None:
        raise RuntimeError("rabbitmq-server is not installed: these tests start their own nodes")
    return Path(found).parent


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    if which is None:
        raise RuntimeError("PostgreSQL's pg_ctl is not installed: these tests start their own")
    return Path(which).parent


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@dataclass(frozen=True)
class ServerTls:
    """What a TLS listener needs: its certificate and key, and the authority whose clients'
    certificates it accepts."""

    ca: Path
    server: Issued


@dataclass
class RabbitNode:
    """One RabbitMQ node with the management plugin, on ports of its own. With ``tls``, AMQP
    is served over TLS only (no plain listener), to clients with a certificate of its
    authority."""

    home: Path  # shared by a cluster's nodes: it holds the Erlang cookie
    name: str = field(default_factory=lambda: f"ldt-{secrets.token_hex(4)}@localhost")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    tls: ServerTls | None = None
    process: subprocess.Popen | None = None

    @property
    def base(self) -> Path:
        return self.home / self.name.partition("@")[0]

    @property
    def amqp_base(self) -> str:
        scheme = "amqps" if self.tls is not None else "amqp"
        return f"{scheme}://guest:guest@127.0.0.1:{self.port}"

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
        }

    def launch(self) -> None:
        """Start the node's process; ``await_startup`` waits for it to serve."""
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        if self.tls is None:
            listeners = f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
        else:
            # TLS only: a client that would speak plain AMQP finds no listener.
            listeners = (
                "listeners.tcp = none\n"
                f"listeners.ssl.default = 127.0.0.1:{self.port}\n"
                f"ssl_options.cacertfile = {self.tls.ca}\n"
                f"ssl_options.certfile = {self.tls.server.cert}\n"
                f"ssl_options.keyfile = {self.tls.server.key}\n"
                "ssl_options.verify = verify_peer\n"
                "ssl_options.fail_if_no_peer_cert = true\n"
            )
        (self.base / "rabbitmq.conf").write_text(
            listeners + "management.tcp.ip = 127.0.0.1\n"
            f"management.tcp.port = {self.management_port}\n"
            # A node of three with one stopped must keep serving: no pause on minority here.
            "cluster_partition_handling = ignore\n"
        )
        with (self.base / "server.out").open("ab") as out:
            self.process = subprocess.Popen(
                [str(_rabbit_bin() / "rabbitmq-server")],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ctl(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [str(_rabbit_bin() / "rabbitmqctl"), "-n", self.name, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.name}: {result.stderr}")
        return result.stdout

    def await_startup(self, timeout: float = 120) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: see {self.base / 'server.out'}")
        # ``wait`` first finds the node through its pid file (it is not known to epmd at once).
        self.ctl(
            "wait",
            str(self.base / "node.pid"),
            "--timeout",
            str(int(timeout)),
            timeout=timeout + 10,
        )

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")

    def infrastructure(self, database_url: str) -> Infrastructure:
        return Infrastructure(database_url, self.amqp_base, self.management_url)

    def shutdown(self) -> None:
        # Its data is thrown away: a graceful stop would only cost time (~5 s per node).
        if self.process is not None:
            _kill_group(self.process)


@contextlib.contextmanager
def _home(prefix: str) -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def rabbit_node(tls: ServerTls | None = None) -> Iterator[RabbitNode]:
    """A single RabbitMQ node of this test's own, shut down and deleted afterwards."""
    with rabbit_cluster(1, tls) as nodes:
        yield nodes[0]


@contextlib.contextmanager
def rabbit_cluster(size: int = 3, tls: ServerTls | None = None) -> Iterator[list[RabbitNode]]:
    """``size`` nodes on loopback, clustered (quorum queues replicate across all of them)."""
    with _home("ldt-rabbit-") as home:
        nodes = [RabbitNode(home, tls=tls) for _ in range(size)]
        try:
            for node in nodes:  # all boot at once: booting is most of the wait
                node.launch()
            for node in nodes:
                node.await_startup()
            for node in nodes[1:]:
                node.stop_app()
                node.ctl("join_cluster", nodes[0].name)
                node.start_app()
            if size > 1:
                wait_until(
                    lambda: all(n.name in nodes[0].ctl("cluster_status") for n in nodes),
                    timeout=60,
                    interval=1,
                    what="every node in the cluster",
                )
            yield nodes
        finally:
            for node in reversed(nodes):
                node.shutdown()


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of this test's own: trust authentication, loopback only. With
    ``tls``, over TLS with a client certificate of its authority only (``hostssl``,
    ``clientcert=verify-ca``: a connection in clear, or without the certificate, is refused)."""

    folder: Path
    port: int = field(default_factory=free_port)
    tls: ServerTls | None = None

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str, timeout: float = 120) -> None:
        # initdb and the server refuse to run as root.
        result = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr or result.stdout}")

    def init(self) -> None:
        self._as_postgres(
            str(_postgres_bin() / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        )
        if self.tls is not None:
            # The server reads its key as postgres, and refuses one others may read.
            for name, source in (
                ("ca.pem", self.tls.ca),
                ("server.pem", self.tls.server.cert),
                ("server.key", self.tls.server.key),
            ):
                target = self.folder / name
                shutil.copyfile(source, target)
                shutil.chown(target, "postgres", "postgres")
                target.chmod(0o600)
            hba = self.data / "pg_hba.conf"
            # Over TLS with a client certificate of the authority only, as the broker asks.
            hba.write_text(
                "local all all trust\n"
                "hostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n"
                "hostssl all all ::1/128 trust clientcert=verify-ca\n"
            )
            shutil.chown(hba, "postgres", "postgres")

    def _pg_ctl(self, *args: str) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder}"
            # Durability is not what these tests are about; speed on a busy machine is.
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=300"
        )
        if self.tls is not None:
            options += (
                f" -c ssl=on -c ssl_cert_file={self.folder / 'server.pem'}"
                f" -c ssl_key_file={self.folder / 'server.key'}"
                f" -c ssl_ca_file={self.folder / 'ca.pem'}"
            )
        self._as_postgres(
            str(_postgres_bin() / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            *args,
        )

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-m", mode)

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")


@contextlib.contextmanager
def postgres_server(tls: ServerTls | None = None) -> Iterator[PostgresServer]:
    folder = Path(tempfile.mkdtemp(prefix="ldt-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    server = PostgresServer(folder, tls=tls)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
