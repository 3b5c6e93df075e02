"""Runs one nameko service class as a process: ``python -m kernel.runner module:Class``.

eventlet must patch the standard library before anything else is imported, psycopg2 included
(eventlet then makes it cooperative). SIGTERM stops the service gracefully: entrypoints stop
taking work, in-flight workers finish (a message is acknowledged only after its handler's
transaction committed), then the relay and the ops server stop and connections close.

The process first installs the kernel's patches of nameko and kombu
(``kernel.nameko_adapters.patches``): importing a service applies none.

Logs are JSON lines (``LEDGERDESK_LOG_FORMAT=text`` for the old format), at or above
``LEDGERDESK_LOG_LEVEL``; every process serves its ops endpoints (``kernel.observability``).
"""

import warnings

# Known and accepted: nameko 2.14 runs on eventlet (see README, "Versions").
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import errno  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from nameko.runners import ServiceRunner  # noqa: E402

from kernel import forgetting  # noqa: E402
from kernel.config import ConfigurationError, Settings  # noqa: E402
from kernel.db import DatabaseUnavailable  # noqa: E402
from kernel.logs import (  # noqa: E402, F401 - the runner's names, kept for their users
    OWN_PACKAGES,
    CredentialsRedacted,
    ExceptionTypesOnly,
    ExpectedErrorsInOneLine,
    JsonLines,
    configure_logging,
)
from kernel.nameko_adapters import patches  # noqa: E402
from kernel.observability import Operations  # noqa: E402
from kernel.tracing import setup_tracing  # noqa: E402


def load(path: str) -> type:
    module_name, _, class_name = path.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def with_operations(service_cls: type) -> type:
    """Every process serves its ops endpoints: add ``Operations`` unless the class has one."""
    if not any(isinstance(v, Operations) for _, v in inspect.getmembers(service_cls)):
        service_cls.ops = Operations()  # type: ignore[attr-defined]
    return service_cls


def run(service_cls: type, config: dict) -> None:
    """nameko's ``run``, but a SIGTERM that comes while the service is still starting (waiting
    to re-apply retention's log of forgetting, say) ends the wait and the process cleanly:
    nameko would stop a container that has not started, which fails on its timers and leaves
    the process waiting."""
    runner = ServiceRunner(config)
    runner.add_service(service_cls)
    started = [False]

    def shutdown(signum, frame):
        # Signal handlers run in the main loop and cannot use eventlet primitives.
        if started[0]:
            eventlet.spawn_n(runner.stop)
        else:
            forgetting.abandon_start()

    signal.signal(signal.SIGTERM, shutdown)
    try:
        runner.start()
    except forgetting.StartAbandoned:
        return
    started[0] = True
    if forgetting.start_abandoned():  # told to stop once the wait was over: stop now
        runner.stop()
        return
    # As nameko does: a signal while the main greenlet waits interrupts it (EINTR).
    waiting = eventlet.spawn(runner.wait)
    while True:
        try:
            waiting.wait()
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise
        except KeyboardInterrupt:
            try:
                runner.stop()
            except KeyboardInterrupt:
                runner.kill()
        else:
            break


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m kernel.runner module.path:ServiceClass", file=sys.stderr)
        return 2
    # Before any service is loaded: what the kernel mends in nameko and kombu (heartbeats on
    # publisher connections, a clean stop while connecting) holds for the whole process.
    patches.install()
    try:
        service_cls = with_operations(load(argv[0]))
        name = getattr(service_cls, "name")  # noqa: B009
        # Only the secrets this service uses are read (kernel.config.SERVICE_SECRETS).
        settings = Settings.from_env(service=name)
        configure_logging(name, settings.log_format, settings.log_level)
        setup_tracing(name, settings.traces_exporter)
        run(service_cls, settings.nameko_config())
    except (ConfigurationError, DatabaseUnavailable) as exc:
        print(f"{argv[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
