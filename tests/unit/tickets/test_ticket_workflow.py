"""The ticket workflow and the tickets commands, in plain Python: no database, no broker.

Every (from, to) pair of the five statuses is tried: the legal moves record what they should,
the illegal ones raise ``Conflict`` and record nothing, and setting the status a ticket already
has is no transition at all.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from marshmallow import ValidationError

from kernel.crypto.fields import ERASED
from kernel.envelope import new_envelope
from kernel.errors import Conflict
from services.tickets import commands
from services.tickets.domain import TRANSITIONS, Ticket, can_move
from services.tickets.events import REGISTRY, STATUSES

TENANT = str(uuid.uuid4())
REQUESTER = str(uuid.uuid4())
AGENT = str(uuid.uuid4())

LEGAL = {
    ("new", "open"),
    ("open", "pending"),
    ("pending", "open"),
    ("open", "solved"),
    ("solved", "closed"),
    ("solved", "open"),
}
# The shortest legal way from a new ticket to each status.
PATH_TO = {
    "new": [],
    "open": ["open"],
    "pending": ["open", "pending"],
    "solved": ["open", "solved"],
    "closed": ["open", "solved", "closed"],
}
PAIRS = [(a, b) for a, b in itertools.product(STATUSES, STATUSES) if a != b]


def new_ticket(**changes: Any) -> Ticket:
    fields = {
        "tenant_id": TENANT,
        "requester_id": REQUESTER,
        "subject": "Printer on fire",
        "body": "It is on fire.",
        "priority": "normal",
        "tags": [],
        "redactions": 0,
        **changes,
    }
    return Ticket.create(**fields)


def ticket_at(status: str) -> Ticket:
    """A ticket brought to ``status`` by legal moves, with nothing left pending."""
    ticket = new_ticket()
    for step in PATH_TO[status]:
        ticket.move_to(step)
    assert ticket.status == status
    ticket.version += len(ticket.pending)
    ticket.pending.clear()
    return ticket


def recorded(ticket: Ticket) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, e.payload) for e in ticket.pending]


def test_the_transition_table_is_the_documented_workflow():
    assert set(TRANSITIONS) == set(STATUSES)
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL
    assert TRANSITIONS["closed"] == frozenset()


def test_a_new_ticket_records_one_valid_created_event():
    ticket = new_ticket(priority="high", tags=["billing"])
    [(type_, payload)] = recorded(ticket)
    assert type_ == "ticket_created"
    assert ticket.status == "new" and ticket.priority == "high"
    assert ticket.tenant_id == TENANT and ticket.requester_id == REQUESTER
    assert payload["ticket_id"] == ticket.id and payload["tags"] == ["billing"]
    REGISTRY["ticket_created"].validate(payload)


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_move_between_two_statuses(current, target):
    ticket = ticket_at(current)
    assert can_move(current, target) == ((current, target) in LEGAL)
    if (current, target) in LEGAL:
        ticket.move_to(target)
        expected = [
            (
                "ticket_status_changed",
                {
                    "ticket_id": ticket.id,
                    "tenant_id": TENANT,
                    "previous": current,
                    "status": target,
                },
            )
        ]
        if target == "closed":
            expected.append(("ticket_closed", {"ticket_id": ticket.id, "tenant_id": TENANT}))
        assert recorded(ticket) == expected
        assert ticket.status == target
        for type_, payload in expected:
            REGISTRY[type_].validate(payload)
    else:
        with pytest.raises(Conflict):
            ticket.move_to(target)
        assert ticket.pending == []
        assert ticket.status == current


@pytest.mark.parametrize("status", STATUSES)
def test_setting_the_current_status_again_records_nothing(status):
    ticket = ticket_at(status)
    ticket.move_to(status)
    assert ticket.pending == [] and ticket.status == status


def test_a_full_life_through_every_legal_move():
    ticket = new_ticket()
    ticket.pending.clear()
    for target in ("open", "pending", "open", "solved", "open", "solved", "closed"):
        ticket.move_to(target)
    statuses = [e.payload["status"] for e in ticket.pending if e.type == "ticket_status_changed"]
    assert statuses == ["open", "pending", "open", "solved", "open", "solved", "closed"]
    assert [e.type for e in ticket.pending].count("ticket_closed") == 1
    assert ticket.status == "closed"


def test_state_rebuilt_from_history_matches_the_live_ticket():
    ticket = new_ticket(tags=["b", "a"])
    ticket.move_to("open")
    ticket.assign(AGENT)
    ticket.prioritise("urgent")
    ticket.tag(["x"])
    ticket.move_to("solved")
    ticket.move_to("closed")
    history = [
        new_envelope(
            type=e.type,
            schema_version=1,
            source="tickets",
            stream_id=ticket.stream_id,
            stream_version=n,
            tenant_id=uuid.UUID(TENANT),
            actor_id=AGENT,
            payload=e.payload,
        )
        for n, e in enumerate(ticket.pending, start=1)
    ]
    rebuilt = Ticket.from_history(ticket.id, history)
    assert (rebuilt.status, rebuilt.assignee_id, rebuilt.priority, rebuilt.tags) == (
        "closed",
        AGENT,
        "urgent",
        ("x",),
    )
    assert rebuilt.version == len(history) and rebuilt.pending == []


# --- a closed ticket is final -------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.assign(AGENT),
        lambda t: t.assign(None),
        lambda t: t.prioritise("urgent"),
        lambda t: t.tag(["new-tag"]),
        lambda t: t.retitle("Printer fixed", 0),
        lambda t: t.add_message(
            author_id=AGENT, author_kind="agent", body="hello", internal=False, redactions=0
        ),
        lambda t: t.add_message(
            author_id=REQUESTER, author_kind="requester", body="hi", internal=False, redactions=0
        ),
        lambda t: t.move_to("open"),
    ],
    ids=[
        "assign",
        "unassign",
        "prioritise",
        "tag",
        "retitle",
        "agent-message",
        "requester-message",
        "reopen",
    ],
)
def test_a_closed_ticket_refuses_every_change(change):
    ticket = ticket_at("closed")
    before = (ticket.assignee_id, ticket.priority, ticket.tags, ticket.status)
    with pytest.raises(Conflict):
        change(ticket)
    assert ticket.pending == []
    assert (ticket.assignee_id, ticket.priority, ticket.tags, ticket.status) == before


@pytest.mark.parametrize("status", ["new", "open", "pending", "solved"])
def test_an_unclosed_ticket_takes_assignment_priority_tags_and_messages(status):
    ticket = ticket_at(status)
    ticket.assign(AGENT)
    ticket.prioritise("low")
    ticket.tag(["vip"])
    message_id = ticket.add_message(
        author_id=AGENT, author_kind="agent", body="on it", internal=True, redactions=0
    )
    assert [e.type for e in ticket.pending] == [
        "ticket_assigned",
        "ticket_priority_changed",
        "ticket_tags_changed",
        "message_added",
    ]
    for event in ticket.pending:
        REGISTRY[event.type].validate(event.payload)
    added = ticket.pending[-1].payload
    assert uuid.UUID(message_id) and added["message_id"] == message_id
    assert added["internal"] is True and added["author_kind"] == "agent"
    assert ticket.status == status


# --- no-op changes and tags ---------------------------------------------------------------------


def test_changes_to_the_current_value_record_nothing():
    ticket = ticket_at("open")
    ticket.assign(None)  # already unassigned
    ticket.prioritise("normal")
    ticket.tag([])
    assert ticket.pending == []
    ticket.assign(AGENT)
    ticket.pending.clear()
    ticket.assign(AGENT)
    assert ticket.pending == []
    ticket.assign(None)
    [unassigned] = ticket.pending
    assert unassigned.payload["assignee_id"] is None and ticket.assignee_id is None


def test_tags_are_normalised_trimmed_unique_and_sorted():
    ticket = new_ticket(tags=[" vip", "billing", "vip ", "  ", "", "billing"])
    assert ticket.pending[0].payload["tags"] == ["billing", "vip"]
    assert ticket.tags == ("billing", "vip")
    ticket.pending.clear()
    # The same set in another order and spelling is no change.
    ticket.tag(["vip", " billing ", "vip"])
    assert ticket.pending == []
    ticket.tag(["zeta", "alpha", "zeta"])
    [changed] = ticket.pending
    assert changed.type == "ticket_tags_changed" and changed.payload["tags"] == ["alpha", "zeta"]
    assert ticket.tags == ("alpha", "zeta")


def test_a_tag_change_names_the_requester_whose_key_holds_the_tickets():
    ticket = ticket_at("open")
    ticket.tag(["vip"])
    [changed] = ticket.pending
    assert changed.payload["requester_id"] == REQUESTER
    assert REGISTRY["ticket_tags_changed"].validate(changed.payload)["tags"] == ["vip"]
    tags = REGISTRY["ticket_tags_changed"]
    assert tags.latest == 2 and tags.personal_fields == ("tags",)
    assert "tags" in REGISTRY["ticket_created"].personal_fields


def test_a_version_1_tag_change_upcasts_with_no_requester():
    v1 = new_envelope(
        type="ticket_tags_changed",
        schema_version=1,
        source="tickets",
        stream_id="ticket-x",
        stream_version=2,
        tenant_id=uuid.UUID(TENANT),
        actor_id=AGENT,
        payload={"ticket_id": str(uuid.uuid4()), "tenant_id": TENANT, "tags": ["old"]},
    )
    upcast = REGISTRY.upcast(v1)
    assert upcast.schema_version == 2
    assert upcast.payload == {**v1.payload, "requester_id": None}


def test_tags_erased_with_the_tickets_key_are_no_tags_and_any_change_is_recorded():
    ticket = Ticket.from_history(
        "t",
        [
            new_envelope(
                type="ticket_created",
                schema_version=1,
                source="tickets",
                stream_id="ticket-t",
                stream_version=1,
                tenant_id=uuid.UUID(TENANT),
                actor_id=AGENT,
                payload={**new_ticket().pending[0].payload, "tags": ERASED},
            )
        ],
    )
    assert ticket.tags is None
    # Recorded, so that writing it under the shredded key refuses the change.
    ticket.tag([])
    [changed] = ticket.pending
    assert changed.payload["tags"] == []
    ticket.pending.clear()
    ticket.tags = None
    ticket.seal_tags()  # nothing readable to seal
    assert ticket.pending == []


def test_sealing_records_the_tags_again_even_on_a_closed_ticket():
    ticket = ticket_at("open")
    ticket.tag(["b", "a"])
    ticket.move_to("solved")
    ticket.move_to("closed")
    ticket.pending.clear()
    ticket.seal_tags()
    [sealed] = ticket.pending
    assert (sealed.type, sealed.payload["tags"]) == ("ticket_tags_changed", ["a", "b"])
    assert ticket.tags == ("a", "b") and ticket.status == "closed"


def test_a_new_subject_is_recorded_under_the_requesters_ticket_key_and_the_same_is_not():
    ticket = ticket_at("open")
    ticket.retitle("Printer on fire", 0)  # the subject it has
    assert ticket.pending == []
    ticket.retitle("Printer on fire again", 1)
    [changed] = ticket.pending
    assert changed.type == "ticket_subject_changed"
    assert REGISTRY["ticket_subject_changed"].validate(changed.payload) == {
        "ticket_id": uuid.UUID(ticket.id),
        "tenant_id": uuid.UUID(TENANT),
        "requester_id": uuid.UUID(REQUESTER),
        "subject": "Printer on fire again",
        "redactions": 1,
    }
    subject_changed = REGISTRY["ticket_subject_changed"]
    assert subject_changed.personal_fields == ("subject",)
    assert subject_changed.parent_field == "requester_id" and not subject_changed.published
    assert ticket.subject == "Printer on fire again"


# --- commands -----------------------------------------------------------------------------------


def create_command(**changes: Any) -> dict[str, Any]:
    return {
        "subject": "Refund",
        "body": "Please refund order 123",
        "requester_id": REQUESTER,
        **changes,
    }


def test_create_command_defaults_priority_and_tags():
    loaded = commands.CreateTicketV1().load(create_command())
    assert loaded["priority"] == "normal" and loaded["tags"] == []
    assert loaded["requester_id"] == uuid.UUID(REQUESTER)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"status": "open"}, "status"),
        ({"assignee_id": AGENT}, "assignee_id"),
        ({"priority": "critical"}, "priority"),
        ({"priority": "URGENT"}, "priority"),
        ({"requester_id": "not-a-uuid"}, "requester_id"),
        ({"subject": ""}, "subject"),
        ({"subject": "x" * 501}, "subject"),
        ({"body": ""}, "body"),
        ({"tags": ["has space"]}, "tags"),
        ({"tags": ["a,b"]}, "tags"),
        ({"tags": [""]}, "tags"),
        ({"tags": [f"t{n}" for n in range(21)]}, "tags"),
        ({"tags": "vip"}, "tags"),
    ],
)
def test_create_command_refuses(changes, field):
    with pytest.raises(ValidationError) as caught:
        commands.CreateTicketV1().load(create_command(**changes))
    assert field in caught.value.normalized_messages()


@pytest.mark.parametrize("missing", ["subject", "body", "requester_id"])
def test_create_command_requires(missing):
    command = create_command()
    del command[missing]
    with pytest.raises(ValidationError) as caught:
        commands.CreateTicketV1().load(command)
    assert missing in caught.value.normalized_messages()


@pytest.mark.parametrize(
    "request_",
    [
        {"status": "open"},
        {"priority": "urgent"},
        {"assignee_id": None},
        {"assignee_id": AGENT},
        {"tags": []},
        {"status": "closed", "priority": "low", "tags": ["a"], "assignee_id": AGENT},
        {"subject": "A better subject"},
    ],
)
def test_update_command_accepts(request_):
    loaded = commands.UpdateTicketV1().load(request_)
    assert set(loaded) == set(request_)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({}, "_schema"),
        ({"status": "new"}, "status"),
        ({"status": "reopened"}, "status"),
        ({"priority": "meh"}, "priority"),
        ({"assignee_id": "nobody"}, "assignee_id"),
        ({"subject": ""}, "subject"),
        ({"subject": "x" * 501}, "subject"),
        ({"requester_id": REQUESTER}, "requester_id"),
        ({"version": 3}, "version"),
        ({"tags": ["bad tag"]}, "tags"),
    ],
)
def test_update_command_refuses(request_, field):
    with pytest.raises(ValidationError) as caught:
        commands.UpdateTicketV1().load(request_)
    assert field in caught.value.normalized_messages()


def test_message_command_defaults_to_a_public_agent_message():
    assert commands.AddMessageV1().load({"body": "hello"}) == {
        "body": "hello",
        "internal": False,
        "on_behalf_of_requester": False,
        "attachment_ids": [],
    }
    note = commands.AddMessageV1().load({"body": "note", "internal": True})
    assert note["internal"] is True and note["on_behalf_of_requester"] is False
    reply = commands.AddMessageV1().load({"body": "re", "on_behalf_of_requester": True})
    assert reply["internal"] is False and reply["on_behalf_of_requester"] is True


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"body": "x", "internal": True, "on_behalf_of_requester": True}, "internal"),
        ({"body": ""}, "body"),
        ({}, "body"),
        ({"body": "x", "internal": "yes"}, "internal"),
        ({"body": "x", "internal": 1}, "internal"),
        ({"body": "x", "on_behalf_of_requester": "true"}, "on_behalf_of_requester"),
        ({"body": "x", "author_id": AGENT}, "author_id"),
        ({"body": "x" * 100_001}, "body"),
    ],
)
def test_message_command_refuses(request_, field):
    with pytest.raises(ValidationError) as caught:
        commands.AddMessageV1().load(request_)
    assert field in caught.value.normalized_messages()
