"""kernel.forgetting with the log and the handlers as plain functions: the log is applied in
order, a log that cannot be read (or a handler that fails) is tried again from the start
instead of letting the service serve, and a stop while waiting ends the wait."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import pytest

from kernel import forgetting

AT = "2026-11-22T12:00:00+00:00"


def entry(command: str, **fields) -> dict:
    return {
        "at": AT,
        "payload": {
            "request_id": str(uuid.uuid4()),
            "command": command,
            "tenant_id": str(uuid.uuid4()),
            "services": None,
            "cutoffs": None,
            **fields,
        },
    }


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(forgetting, "FIRST_RETRY_SECONDS", 0.01)
    monkeypatch.setattr(forgetting, "MAX_RETRY_SECONDS", 0.02)


def test_the_log_is_applied_in_order_as_commands_handlers_take(caplog):
    caplog.set_level(logging.INFO, logger="kernel.forgetting")
    log = [
        entry("erase_subject", subject_id=str(uuid.uuid4()), subject_kind="contact"),
        entry("purge_category", category="access_log", before=AT, cutoffs={}),
    ]
    applied: list[dict] = []
    own: list[str] = []

    def apply(command: dict) -> bool:
        applied.append(command)
        return command["command"] == "erase_subject"

    assert forgetting.reapply("svc", lambda: log, apply, own=lambda: own.append("holds")) == 1
    assert [c["command"] for c in applied] == ["erase_subject", "purge_category"]
    assert applied[0]["subject_id"] == uuid.UUID(log[0]["payload"]["subject_id"])
    assert applied[0]["issued_at"] == dt.datetime.fromisoformat(AT)
    assert applied[1]["cutoffs"] == {}
    assert own == ["holds"]
    assert "svc re-applied 1 of 2 entries" in caplog.text


def test_an_unreadable_log_or_a_failing_handler_is_tried_again_not_skipped(caplog):
    erasure = entry("erase_subject", subject_id=str(uuid.uuid4()), subject_kind="contact")
    reads = iter([TimeoutError("retention down"), ConnectionError("still down")])

    def read() -> list[dict]:
        failure = next(reads, None)
        if failure is not None:
            raise failure
        return [erasure]

    tries: list[str] = []

    def apply(command: dict) -> bool:
        tries.append(command["command"])
        if len(tries) == 1:
            raise RuntimeError("the database went away, naming someone@example.com")
        return True

    assert forgetting.reapply("svc", read, apply) == 1
    assert tries == ["erase_subject", "erase_subject"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3
    assert "reading retention's log of forgetting failed (TimeoutError)" in warnings[0]
    request_id = erasure["payload"]["request_id"]
    assert f"re-applying erase_subject of request {request_id} failed" in warnings[2]
    assert "example.com" not in caplog.text  # the error's type, never its text


def test_a_stop_while_waiting_ends_the_wait_without_serving():
    stopping = iter([False, False, True])

    def read() -> list[dict]:
        raise TimeoutError("retention down")

    with pytest.raises(forgetting.StartAbandoned):
        forgetting.reapply("svc", read, lambda c: True, stopping=lambda: next(stopping, True))
