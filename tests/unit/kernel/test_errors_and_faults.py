"""Unit tests for kernel.errors (nameko round trips) and kernel.faults (parsing, never a kill)."""

from __future__ import annotations

import json
import os
import signal
import types

import pytest
from nameko.exceptions import RemoteError, deserialize, serialize

from kernel import errors, faults


def round_trip(exc: BaseException) -> BaseException:
    """What a caller receives: serialised, sent as JSON over the broker, deserialised."""
    return deserialize(json.loads(json.dumps(serialize(exc))))


@pytest.mark.parametrize(
    "cls",
    [
        errors.NotFound,
        errors.Conflict,
        errors.ChangedMeanwhile,
        errors.SubjectErased,
        errors.Forbidden,
        errors.Unauthorized,
        errors.ServiceUnavailable,
    ],
)
def test_domain_errors_survive_the_nameko_round_trip(cls: type[errors.DomainError]):
    received = round_trip(cls("ticket 42 is closed"))

    assert type(received) is cls
    assert received.detail == "ticket 42 is closed"
    assert received.args == ("ticket 42 is closed",)


def test_a_domain_error_without_detail_round_trips_with_an_empty_detail():
    received = round_trip(errors.NotFound())

    assert type(received) is errors.NotFound
    assert received.detail == ""


def test_validation_failed_keeps_its_errors_and_detail():
    original = errors.ValidationFailed(
        {"region": ["must be one of: uk, in"], "admin": {"email": ["Not a valid email address."]}},
        "sign-up refused",
    )

    received = round_trip(original)

    assert type(received) is errors.ValidationFailed
    assert received.errors == {
        "region": ["must be one of: uk, in"],
        "admin": {"email": ["Not a valid email address."]},
    }
    assert received.detail == "sign-up refused"


def test_validation_failed_default_detail_round_trips():
    received = round_trip(errors.ValidationFailed({"x": ["bad"]}))

    assert received.detail == "the request is not valid"
    assert received.errors == {"x": ["bad"]}


def test_serialised_error_names_its_type_and_carries_its_fields():
    wire = serialize(errors.ValidationFailed({"age_confirmed": ["no"]}))

    assert wire["exc_type"] == "ValidationFailed"
    assert wire["exc_path"] == "kernel.errors.ValidationFailed"
    assert wire["exc_args"] == [{"age_confirmed": ["no"]}, "the request is not valid"]


def test_an_unregistered_error_arrives_as_a_remote_error():
    received = round_trip(errors.DomainError("base class, not registered"))

    assert type(received) is RemoteError
    assert received.exc_type == "DomainError"


def test_domain_errors_share_a_base_and_keep_detail():
    for cls in (errors.NotFound, errors.Conflict, errors.Forbidden, errors.Unauthorized):
        error = cls("why")
        assert isinstance(error, errors.DomainError)
        assert error.detail == "why"
        assert str(error) == "why"


# --- faults ----------------------------------------------------------------------------------


@pytest.fixture
def kills(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Replace the module's ``os`` so a reached fault point is recorded, never executed."""
    recorded: list[tuple[int, int]] = []
    fake_os = types.SimpleNamespace(
        kill=lambda pid, sig: recorded.append((pid, sig)), getpid=os.getpid, environ=os.environ
    )
    monkeypatch.setattr(faults, "os", fake_os)
    monkeypatch.setattr(faults, "_counts", {})
    return recorded


@pytest.mark.parametrize(
    ("raw", "armed"),
    [
        ("", {}),
        ("relay.after_publish", {"relay.after_publish": 1}),
        ("relay.after_publish:3", {"relay.after_publish": 3}),
        ("a, b:2 ,c:10", {"a": 1, "b": 2, "c": 10}),
        ("a,,b", {"a": 1, "b": 1}),
        ("a:", {"a": 1}),
    ],
)
def test_armed_points_are_parsed_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str, armed: dict[str, int]
):
    monkeypatch.setenv("LEDGERDESK_FAULTS", raw)

    assert faults._armed() == armed


def test_no_variable_arms_nothing(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("LEDGERDESK_FAULTS", raising=False)

    assert faults._armed() == {}


def test_a_non_numeric_count_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LEDGERDESK_FAULTS", "relay.after_publish:twice")

    with pytest.raises(ValueError):
        faults._armed()


def test_a_point_that_is_not_armed_does_nothing(monkeypatch, kills):
    monkeypatch.setattr(faults, "_ARMED", {"other.point": 1})

    for _ in range(5):
        assert faults.point("relay.after_publish") is None

    assert kills == []
    assert faults._counts == {}


def test_an_armed_point_fires_on_the_nth_time_only(monkeypatch, kills):
    monkeypatch.setattr(faults, "_ARMED", {"relay.after_publish": 3})

    faults.point("relay.after_publish")
    faults.point("relay.after_publish")
    assert kills == []

    faults.point("relay.after_publish")
    assert kills == [(os.getpid(), signal.SIGKILL)]
    assert faults._counts == {"relay.after_publish": 3}
