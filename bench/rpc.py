"""RPC round trips: the kernel's reply-queue proxy against direct reply-to (issue 19).

    .venv/bin/python -m bench.rpc            # about a minute
    .venv/bin/python -m bench.rpc --quick    # a smoke run
    .venv/bin/python -m bench --only rpc     # the same, as a section of the table

A tiny service (``Pinger``, one ``ping`` on the kernel's ``rpc`` entrypoint: a quorum queue,
unconfirmed replies) runs as a process of its own through ``kernel.runner``, as every service
does. A second process (this module with ``--caller``) runs a nameko container holding the
proxies as dependencies, as the gateway holds its own, and drives them through worker calls:

- ``ReplyQueueRpcProxy``, the kernel's proxy before issue 19 (nameko's): a confirmed request,
  the reply through the RPC exchange to the caller's reply queue, consumed and acknowledged;
- the same with its request's confirm not waited for: what that wait costs on its own;
- ``TimedRpcProxy``, direct reply-to: the request on the channel that consumes
  ``amq.rabbitmq.reply-to`` (its confirm not waited for), the reply through the default
  exchange straight to that channel.

They take turns, round after round, so all meet the same minutes of a shared machine: one
caller's round-trip latency (p50, p99), and the throughput of N callers at once. CPU per call
is counted for the caller, the service and the broker (``/proc``, so Linux only).
"""

from __future__ import annotations

import sys
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

if __name__ == "__main__" and "--caller" in sys.argv:
    # The caller process is a nameko process: eventlet patches the standard library before
    # anything else is imported, as in ``kernel.runner``.
    import eventlet

    eventlet.monkey_patch()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from nameko.extensions import Entrypoint  # noqa: E402

from kernel.nameko_adapters.proxy import ReplyQueueRpcProxy, TimedRpcProxy  # noqa: E402
from kernel.nameko_adapters.rpc import rpc  # noqa: E402

# Today's proxy; the same with its request's confirm not waited for (what that wait costs on
# its own); direct reply-to.
VARIANTS = ("reply queue", "reply queue, unconfirmed request", "direct reply-to")


class Pinger:
    """The service called: as little work as an RPC can do."""

    name = "pinger"

    @rpc
    def ping(self, n: int) -> int:
        return n


class _Drive(Entrypoint):
    """Runs a method in a worker of the container, as an HTTP request would (nameko's
    ``entrypoint_hook`` piles up a listener per call, its cost growing with the calls made)."""

    def __call__(self, *args: Any) -> Any:
        import eventlet.event

        done = eventlet.event.Event()

        def handle_result(worker_ctx: Any, result: Any, exc_info: Any) -> Any:
            done.send((result, exc_info))
            return result, exc_info

        self.container.spawn_worker(self, args, {}, handle_result=handle_result)
        result, exc_info = done.wait()
        if exc_info is not None:
            raise exc_info[1]
        return result


drive = _Drive.decorator


class Caller:
    name = "rpcbench"

    queues = ReplyQueueRpcProxy("pinger")
    unconfirmed = ReplyQueueRpcProxy("pinger", use_confirms=False)
    direct = TimedRpcProxy("pinger")

    @drive
    def ping_queue(self, n: int) -> int:
        return self.queues.ping(n)

    @drive
    def ping_unconfirmed(self, n: int) -> int:
        return self.unconfirmed.ping(n)

    @drive
    def ping_direct(self, n: int) -> int:
        return self.direct.ping(n)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU of a process so far, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _broker_pid() -> int | None:
    """The local broker's Erlang VM, if it runs on this machine (read only: its CPU)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
    return None


def _percentile(values: list[float], q: float) -> float:
    from bench.harness import percentile

    return percentile(values, q)


def caller_main(config_json: str, pinger_pid: int, quick: bool) -> dict[str, Any]:
    """In the caller process (eventlet patched): every round of both variants, in turns."""
    from nameko.containers import ServiceContainer

    from kernel.config import Settings
    from kernel.nameko_adapters import patches

    patches.install()
    # The unconfirmed variant asks nameko for a mandatory publish without confirms, which it
    # warns about on every call; that is the point of the variant.
    warnings.filterwarnings("ignore", message="Mandatory delivery was requested")
    settings = Settings.from_env(service="rpcbench")
    config = {**settings.nameko_config(), **json.loads(config_json)}
    container = ServiceContainer(Caller, config)
    container.start()
    broker = _broker_pid()
    # Short rounds, many of them, in turns: the machine's speed moves from minute to minute.
    rounds = 2 if quick else 8
    calls = 300 if quick else 1_000
    seconds = 2.0 if quick else 3.0
    callers = int(config["max_workers"]) - 2
    figures: dict[str, dict[str, Any]] = {
        v: {"latency": [], "calls": 0, "seconds": 0.0, "cpu": {}, "rates": []} for v in VARIANTS
    }
    drives = {e.method_name: e for e in container.entrypoints}
    methods = ("ping_queue", "ping_unconfirmed", "ping_direct")
    hooks = {v: drives[m] for v, m in zip(VARIANTS, methods, strict=True)}
    try:
        for hook in hooks.values():  # connections opened, code paths warm
            for n in range(100):
                assert hook(n) == n
        for _ in range(rounds):
            for variant, hook in hooks.items():
                latency = figures[variant]["latency"]
                for n in range(calls):
                    began = time.perf_counter()
                    answer = hook(n)
                    latency.append((time.perf_counter() - began) * 1000)
                    if answer != n:
                        raise AssertionError(f"call {n} answered with another call's reply")
            for variant, hook in hooks.items():
                record = figures[variant]
                cpu_before = _cpus(pinger_pid, broker)
                done, elapsed = _throughput(hook, callers, seconds)
                cpu_after = _cpus(pinger_pid, broker)
                record["calls"] += done
                record["seconds"] += elapsed
                record["rates"].append(done / elapsed)
                for who, spent in cpu_after.items():
                    record["cpu"][who] = record["cpu"].get(who, 0.0) + spent - cpu_before[who]
    finally:
        container.stop()
    result: dict[str, Any] = {"callers": callers, "rounds": rounds, "calls": calls}
    for variant, record in figures.items():
        result[variant] = {
            "p50": _percentile(record["latency"], 50),
            "p99": _percentile(record["latency"], 99),
            "throughput": record["calls"] / record["seconds"],
            "rates": record["rates"],
            "cpu_ms_per_call": {
                who: 1000 * spent / record["calls"] for who, spent in record["cpu"].items()
            },
        }
    return result


def _throughput(hook: Any, callers: int, seconds: float) -> tuple[int, float]:
    """``callers`` green threads calling back to back for ``seconds``: calls made, time taken."""
    import eventlet

    done = [0]
    stop_at = time.perf_counter() + seconds

    def loop() -> None:
        n = 0
        while time.perf_counter() < stop_at:
            # A wrong answer (another call's) or an error ends the run: figures of a broken
            # path mean nothing.
            if hook(n) != n:
                raise AssertionError(f"call {n} answered with another call's reply")
            n += 1
            done[0] += 1

    began = time.perf_counter()
    pool = eventlet.GreenPool(callers)
    threads = [pool.spawn(loop) for _ in range(callers)]
    for thread in threads:
        thread.wait()  # raises what ended it
    return done[0], time.perf_counter() - began


def _cpus(pinger_pid: int, broker: int | None) -> dict[str, float]:
    spent = {"caller": time.process_time(), "service": _cpu_seconds(pinger_pid)}
    if broker is not None:
        spent["broker"] = _cpu_seconds(broker)
    return spent


@contextlib.contextmanager
def _pinger(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "kernel.runner", "bench.rpc:Pinger"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(settings: Any, quick: bool) -> dict[str, Any]:
    """Both variants against one pinger process; the figures of the caller process."""
    from kernel.nameko_adapters.rpc_queues import declare_rpc_queues
    from kernel.testing import world_env

    env = world_env(settings)
    env["LEDGERDESK_MAX_WORKERS"] = "18"  # 16 callers, and room to spare at the service
    # The request queue exists before the first call: a call to a service that never
    # declared it is refused as unknown.
    declare_rpc_queues(settings.amqp_uri, ["pinger"], resume=False)
    with _pinger(env) as pinger:
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.rpc",
                "--caller",
                json.dumps({"max_workers": 18}),
                str(pinger.pid),
            ]
            + (["--quick"] if quick else []),
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    if child.returncode != 0:
        raise RuntimeError(f"the caller failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def rows(figures: dict[str, Any]) -> list[Any]:
    from bench.harness import Row

    old, unconfirmed, new = (figures[v] for v in VARIANTS)
    rounds, calls, callers = figures["rounds"], figures["calls"], figures["callers"]

    paired = statistics.median(n / o for n, o in zip(new["rates"], old["rates"], strict=True))

    def cpu(record: dict[str, Any]) -> str:
        return ", ".join(f"{who} {ms:.2f}" for who, ms in record["cpu_ms_per_call"].items())

    return [
        Row(
            "rpc",
            "one caller, round trip p50 [direct reply-to]",
            new["p50"],
            "ms",
            old["p50"],
            "reply queue (ReplyQueueRpcProxy)",
            target="lower",
            note=f"{rounds} rounds of {calls:,} calls each, in turns",
        ),
        Row(
            "rpc",
            "one caller, round trip p99 [direct reply-to]",
            new["p99"],
            "ms",
            old["p99"],
            "reply queue (ReplyQueueRpcProxy)",
            target="lower",
            note=f"{rounds} rounds of {calls:,} calls each, in turns",
        ),
        Row(
            "rpc",
            f"{callers} callers, throughput [direct reply-to]",
            new["throughput"],
            "calls/s",
            old["throughput"],
            "reply queue (ReplyQueueRpcProxy)",
            target="higher",
            note=f"{rounds} rounds in turns, median ratio of a round's pair {paired:.2f};"
            f" CPU ms a call: direct {cpu(new)}; queue {cpu(old)}",
        ),
        Row(
            "rpc",
            "one caller, round trip p50 [reply queue, request not confirmed]",
            unconfirmed["p50"],
            "ms",
            old["p50"],
            "reply queue (ReplyQueueRpcProxy)",
            note="what waiting for the request's confirm costs on its own",
        ),
        Row(
            "rpc",
            f"{callers} callers, throughput [reply queue, request not confirmed]",
            unconfirmed["throughput"],
            "calls/s",
            old["throughput"],
            "reply queue (ReplyQueueRpcProxy)",
            note=f"CPU ms a call: {cpu(unconfirmed)}",
        ),
    ]


def run(ctx: Any, sections: set[str]) -> list[Any]:
    """``python -m bench --only rpc``: a world of its own, no stack."""
    return rows(measure(ctx.world(), ctx.quick))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rpc")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--caller", nargs=2, metavar=("CONFIG", "PINGER_PID"))
    args = parser.parse_args(argv)
    if args.caller:
        print(json.dumps(caller_main(args.caller[0], int(args.caller[1]), args.quick)))
        return 0

    from bench import report
    from bench.harness import infrastructure_from_env
    from kernel.testing import make_world

    with make_world(infrastructure_from_env()) as settings:
        figures = measure(settings, args.quick)
    print(report.table(rows(figures)))
    for variant in VARIANTS:
        rates = ", ".join(f"{r:.0f}" for r in figures[variant]["rates"])
        cpu = figures[variant]["cpu_ms_per_call"]
        print(f"{variant}: rounds {rates} calls/s; CPU ms a call {cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
