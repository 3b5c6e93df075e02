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

import datetime as dt  # noqa: E402
import errno  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

from nameko.runners import ServiceRunner  # noqa: E402
from opentelemetry import trace  # noqa: E402

from kernel import forgetting  # noqa: E402
from kernel.config import ConfigurationError, Settings  # noqa: E402
from kernel.db import DatabaseUnavailable  # noqa: E402
from kernel.nameko_adapters import patches  # noqa: E402
from kernel.observability import Operations  # noqa: E402
from kernel.tracing import setup_tracing  # noqa: E402


def load(path: str) -> type:
    module_name, _, class_name = path.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


class ExpectedErrorsInOneLine(logging.Filter):
    """nameko logs an expected domain error (a 404, a 422) with its whole traceback: one line
    naming the worker and the error type says all an operator needs, and quotes no request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("(expected)") and record.exc_info:
            error = record.exc_info[0]
            worker = record.args[0] if isinstance(record.args, tuple) and record.args else ""
            record.msg = "(expected) %s in %s"
            record.args = (error.__name__ if error else "error", worker)
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class ExceptionTypesOnly(logging.Filter):
    """An exception passed as a log argument ("error handling worker %s: %s") is written as its
    type: its text may quote the data that broke it (a duplicate key's value, an address)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, BaseException) for a in record.args
        ):
            record.args = tuple(
                type(a).__name__ if isinstance(a, BaseException) else a for a in record.args
            )
        return True


class CredentialsRedacted(logging.Filter):
    """A URL's password never reaches a line. nameko masks the broker URL it reports when a
    connection fails, but only the first of a failover list (``amqp://…;amqp://…``): the others
    would go out with their passwords."""

    # Up to the last "@" of the URL: a password may hold an unencoded "@" that clients accept.
    _CREDENTIALS = re.compile(r"(?P<user>[a-z][a-z0-9+.-]*://[^:/@\s;]*):[^\s;]*@", re.I)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call is logging's to report, not ours
            return True
        redacted = self._CREDENTIALS.sub(r"\g<user>:********@", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line, for log collectors: time, level, service, logger, message, and
    the current span's trace and span ids. Messages are the kernel's own (ids, types, counts),
    never message bodies; a traceback is kept as frames and exception type only, since an
    exception's text may quote the data that broke it."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
            line["frames"] = "".join(traceback.format_tb(record.exc_info[2]))
        # Not ASCII-escaped: a value escaped as \uXXXX would slip past a search for it.
        return json.dumps(line, ensure_ascii=False)


# Ledgerdesk's own packages: what LEDGERDESK_LOG_LEVEL=debug opens, and nothing else.
OWN_PACKAGES = ("kernel", "services", "gateway")


def configure_logging(service: str, log_format: str, log_level: str = "info") -> None:
    """Every line to standard error through one handler (JSON lines or text), at or above
    ``log_level`` (LEDGERDESK_LOG_LEVEL). Below info, only Ledgerdesk's own modules write
    more: a library's debug lines (AMQP frames, HTTP requests) are not reviewed for what they
    may quote, so the root, and every library under it, stays at info."""
    level = logging.getLevelNamesMapping()[log_level.upper()]
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonLines(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.addFilter(ExceptionTypesOnly())
    handler.addFilter(CredentialsRedacted())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO))
    for package in OWN_PACKAGES:
        logging.getLogger(package).setLevel(level)
    logging.getLogger("nameko.containers").addFilter(ExpectedErrorsInOneLine())


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
