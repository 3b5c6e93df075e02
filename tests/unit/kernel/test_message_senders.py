"""Who may send what, by the broker-validated ``user_id`` (kernel.broker_users): the decisions
consumers make when ``LEDGERDESK_BROKER_USER_CHECK`` is on."""

from __future__ import annotations

import pytest

from kernel import broker_users
from kernel.config import Settings
from services.broker_definitions import user_of

RPC = "nameko-rpc"


def test_the_kernel_names_users_as_the_broker_definitions_do() -> None:
    assert broker_users.user_of("billing") == user_of("billing") == "ledgerdesk-billing"


@pytest.mark.parametrize(
    ("uri", "user"),
    [
        ("amqp://ledgerdesk-tickets:secret@rabbit:5672/", "ledgerdesk-tickets"),
        (
            "amqp://w1.ledgerdesk-audit:pw@a:5672/w1;amqp://w1.ledgerdesk-audit:pw@b:5672/w1",
            "w1.ledgerdesk-audit",
        ),
        ("amqp://guest:guest@127.0.0.1:5672/", "guest"),
        ("amqp://%2Fodd%40name:pw@h/", "/odd@name"),
    ],
)
def test_a_connection_user_is_read_off_its_uri(uri: str, user: str) -> None:
    assert broker_users.connection_user(uri) == user


def test_a_copy_carries_its_mover_s_user_not_its_first_publisher_s() -> None:
    copied = broker_users.stamped(
        "amqp://ledgerdesk-gateway:pw@h/", {"user_id": "ledgerdesk-billing", "message_id": "m"}
    )
    assert copied == {"user_id": "ledgerdesk-gateway", "message_id": "m"}


@pytest.mark.parametrize(
    ("own_user", "process", "prefix"),
    [
        ("ledgerdesk-billing", "billing", ""),
        ("world_7.ledgerdesk-billing", "billing", "world_7."),
        ("ledgerdesk-tickets", "billing", None),
        ("guest", "billing", None),
    ],
)
def test_the_platform_s_prefix_is_read_off_a_process_s_own_user(
    own_user: str, process: str, prefix: str | None
) -> None:
    assert broker_users.prefix_of(own_user, process) == prefix


@pytest.mark.parametrize(
    ("user_id", "source", "prefix", "taken"),
    [
        ("ledgerdesk-accounts", "accounts", "", True),
        # An operator's replay of a dead letter, through the gateway.
        ("ledgerdesk-gateway", "accounts", "", True),
        # Billing's user putting an accounts event in a queue through the default exchange.
        ("ledgerdesk-billing", "accounts", "", False),
        (None, "accounts", "", False),
        ("guest", "accounts", "", False),
        ("w1.ledgerdesk-accounts", "accounts", "w1.", True),
        # Another world's user of the same process is not this world's.
        ("w2.ledgerdesk-accounts", "accounts", "w1.", False),
        ("ledgerdesk-accounts", "accounts", "w1.", False),
        # A consumer whose own user says nothing of the platform's names takes nothing.
        ("ledgerdesk-accounts", "accounts", None, False),
        (b"ledgerdesk-accounts", "accounts", "", False),
    ],
)
def test_an_event_is_taken_from_its_source_s_user_or_the_gateway_s(
    user_id: object, source: str, prefix: str | None, taken: bool
) -> None:
    assert broker_users.event_sender_allowed(user_id, source, prefix) is taken


@pytest.mark.parametrize(
    ("user_id", "exchange", "prefix", "taken"),
    [
        # Through the RPC exchange, whose topic permissions admit each process's own calls.
        ("ledgerdesk-billing", RPC, "", True),
        ("ledgerdesk-gateway", RPC, "", True),
        ("w1.ledgerdesk-tickets", RPC, "w1.", True),
        # Through the default exchange, which checks nothing but its own name.
        ("ledgerdesk-billing", "", "", False),
        ("ledgerdesk-gateway", "", "", False),
        # Not one of the platform's processes.
        ("guest", RPC, "", False),
        ("ledgerdesk-", RPC, "", False),
        (None, RPC, "", False),
        ("w2.ledgerdesk-tickets", RPC, "w1.", False),
        ("ledgerdesk-tickets", RPC, None, False),
    ],
)
def test_a_request_is_taken_from_a_process_through_the_rpc_exchange_only(
    user_id: object, exchange: str, prefix: str | None, taken: bool
) -> None:
    assert broker_users.request_sender_allowed(user_id, exchange, RPC, prefix) is taken


def test_the_check_is_off_by_default_and_read_from_the_environment() -> None:
    assert Settings().broker_user_check is False
    assert Settings.from_env({"LEDGERDESK_BROKER_USER_CHECK": "true"}).broker_user_check is True
