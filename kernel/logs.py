"""How a Ledgerdesk process logs: JSON lines (or text) to standard error, through filters that
keep exception texts, request data and URL passwords off every line (``configure_logging``).

Its own module, apart from ``kernel.runner``: a process that is no nameko service (the region
router) logs the same way without importing the runner, whose import patches the standard
library for eventlet.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import traceback

from opentelemetry import trace


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
