"""The processes' log lines: one JSON object each, with the current trace, and no exception text."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from kernel.runner import (
    OWN_PACKAGES,
    CredentialsRedacted,
    ExceptionTypesOnly,
    JsonLines,
    configure_logging,
)


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines("tickets"))
    handler.addFilter(ExceptionTypesOnly())
    handler.addFilter(CredentialsRedacted())
    logger = logging.getLogger("ledgerdesk.test.jsonlogs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_the_current_trace(captured):
    logger, stream = captured
    tracer = TracerProvider().get_tracer("test")
    logger.info("outside any span")
    with tracer.start_as_current_span("work") as span:
        logger.warning("handled %s", "e-1")
    outside, inside = lines(stream)
    assert set(outside) == {"time", "level", "service", "logger", "message"}
    assert outside["service"] == "tickets" and outside["level"] == "INFO"
    context = span.get_span_context()
    assert inside["message"] == "handled e-1"
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")


def test_exception_text_never_reaches_the_line(captured):
    logger, stream = captured
    email = "".join(("zoë", "@", "example.com"))  # not in the source the frames quote
    try:
        raise ValueError(f"duplicate key (email)=({email})")
    except ValueError as exc:
        logger.exception("error handling worker %s: %s", "tickets.create", exc)
    [line] = lines(stream)
    assert line["message"] == "error handling worker tickets.create: ValueError"
    assert line["error"] == "ValueError" and "test_json_logs.py" in line["frames"]
    assert email not in stream.getvalue()


def test_text_format_stays_for_humans():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("tickets", "text")
        [handler] = root.handlers
        assert not isinstance(handler.formatter, JsonLines)
        configure_logging("tickets", "json")
        assert isinstance(root.handlers[0].formatter, JsonLines)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_no_password_of_any_url_in_a_failover_list_reaches_the_line(captured):
    logger, stream = captured
    secret = "".join(("s3cr", "et-pw"))  # not in the source the frames quote
    uris = ";".join(f"amqp://ledger:{secret}@rabbit-{n}:5672/ledgerdesk" for n in range(3))
    # As nameko reports a failed connection: it masks the first URL only.
    logger.warning("Error connecting to broker at %s (%s).", uris, "timed out")
    logger.info("postgresql://ledger:%s@db/ledgerdesk_accounts is ready", secret)
    logger.info("a plain line with an address: ada@example.com:5672 stays")
    logger.warning("amqp://ledger:p@%s@rabbit-0:5672/ledgerdesk is down", secret)
    failover, dsn, plain, at_sign = lines(stream)
    assert secret not in stream.getvalue()
    assert failover["message"].count("amqp://ledger:********@rabbit-") == 3
    assert dsn["message"] == "postgresql://ledger:********@db/ledgerdesk_accounts is ready"
    assert plain["message"] == "a plain line with an address: ada@example.com:5672 stays"
    assert at_sign["message"] == "amqp://ledger:********@rabbit-0:5672/ledgerdesk is down"


@pytest.fixture
def logging_restored():
    """configure_logging changes the root logger and the own packages' levels: put them back."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {p: logging.getLogger(p).level for p in OWN_PACKAGES}
    yield
    root.handlers[:], level, packages = saved
    root.setLevel(level)
    for package, package_level in packages.items():
        logging.getLogger(package).setLevel(package_level)


def written(log_level: str) -> list[tuple[str, str]]:
    """(logger, level) of each line written under ``log_level``, from own modules and libraries."""
    configure_logging("tickets", "json", log_level)
    stream = io.StringIO()
    [handler] = logging.getLogger().handlers
    handler.setStream(stream)
    for name in ("kernel.relay", "services.tickets.service", "gateway.http", "amqp", "nameko"):
        logger = logging.getLogger(name)
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
            logger.log(level, "a line")
    return [(line["logger"], line["level"]) for line in lines(stream)]


def test_the_log_level_drops_every_less_severe_line(logging_restored):
    assert written("warning") == [
        (name, level)
        for name in ("kernel.relay", "services.tickets.service", "gateway.http", "amqp", "nameko")
        for level in ("WARNING", "ERROR")
    ]
    assert {level for _, level in written("error")} == {"ERROR"}
    assert {level for _, level in written("info")} == {"INFO", "WARNING", "ERROR"}


def test_debug_opens_ledgerdesks_own_modules_and_never_a_librarys(logging_restored):
    debug = [name for name, level in written("debug") if level == "DEBUG"]
    # A library's debug lines (AMQP frames, HTTP requests) may quote what they carry.
    assert debug == ["kernel.relay", "services.tickets.service", "gateway.http"]
