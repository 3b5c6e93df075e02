"""Tickets: the status workflow, assignment and messages, in plain Python.

The workflow: new → open → pending ↔ open → solved → closed; a solved ticket may reopen; closed
is final. Setting the status a ticket already has is no transition and records nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from kernel.aggregate import Aggregate
from kernel.crypto.fields import is_erased
from kernel.errors import Conflict

TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"open"}),
    "open": frozenset({"pending", "solved"}),
    "pending": frozenset({"open"}),
    "solved": frozenset({"closed", "open"}),
    "closed": frozenset(),
}


def can_move(current: str, target: str) -> bool:
    return target in TRANSITIONS[current]


@dataclass
class Ticket(Aggregate):
    tenant_id: str = ""
    requester_id: str = ""
    status: str = ""
    priority: str = "normal"
    assignee_id: str | None = None
    # None once the ticket's key is gone: its tags read as erased, and none can be written.
    tags: tuple[str, ...] | None = ()
    # As its events read: ERASED once the ticket's key is gone.
    subject: str = ""

    @classmethod
    def create(
        cls,
        *,
        tenant_id: str,
        requester_id: str,
        subject: str,
        body: str,
        priority: str,
        tags: list[str],
        redactions: int,
    ) -> Ticket:
        ticket = cls(id=str(uuid.uuid4()))
        ticket.record(
            "ticket_created",
            ticket_id=ticket.id,
            tenant_id=tenant_id,
            requester_id=requester_id,
            subject=subject,
            body=body,
            priority=priority,
            tags=_tags(tags),
            redactions=redactions,
        )
        return ticket

    def move_to(self, status: str) -> None:
        if status == self.status:
            return
        if self.status == "closed":
            raise Conflict("a closed ticket is final")
        if not can_move(self.status, status):
            raise Conflict(f"a ticket cannot go from {self.status} to {status}")
        previous = self.status
        self.record(
            "ticket_status_changed",
            ticket_id=self.id,
            tenant_id=self.tenant_id,
            previous=previous,
            status=status,
        )
        if status == "closed":
            self.record("ticket_closed", ticket_id=self.id, tenant_id=self.tenant_id)

    def assign(self, assignee_id: str | None) -> None:
        self._writable()
        if assignee_id != self.assignee_id:
            self.record(
                "ticket_assigned",
                ticket_id=self.id,
                tenant_id=self.tenant_id,
                assignee_id=assignee_id,
            )

    def prioritise(self, priority: str) -> None:
        self._writable()
        if priority != self.priority:
            self.record(
                "ticket_priority_changed",
                ticket_id=self.id,
                tenant_id=self.tenant_id,
                priority=priority,
            )

    def tag(self, tags: list[str]) -> None:
        self._writable()
        if self.tags is None or _tags(tags) != list(self.tags):
            self._record_tags(_tags(tags))

    def seal_tags(self) -> None:
        """Record the tags again as they are, closed ticket or not: an older release wrote them
        in plaintext, and this records them under the ticket's key (nothing else changes)."""
        if self.tags is not None:
            self._record_tags(list(self.tags))

    def _record_tags(self, tags: list[str]) -> None:
        self.record(
            "ticket_tags_changed",
            ticket_id=self.id,
            tenant_id=self.tenant_id,
            tags=tags,
            requester_id=self.requester_id,
        )

    def retitle(self, subject: str, redactions: int) -> None:
        """A new subject (its card numbers already cut); the same one again records nothing."""
        self._writable()
        if subject != self.subject:
            self.record(
                "ticket_subject_changed",
                ticket_id=self.id,
                tenant_id=self.tenant_id,
                requester_id=self.requester_id,
                subject=subject,
                redactions=redactions,
            )

    def add_message(
        self, *, author_id: str, author_kind: str, body: str, internal: bool, redactions: int
    ) -> str:
        self._writable()
        message_id = str(uuid.uuid4())
        self.record(
            "message_added",
            ticket_id=self.id,
            tenant_id=self.tenant_id,
            message_id=message_id,
            author_id=author_id,
            author_kind=author_kind,
            body=body,
            internal=internal,
            redactions=redactions,
            requester_id=self.requester_id,
        )
        return message_id

    def _writable(self) -> None:
        if self.status == "closed":
            raise Conflict("a closed ticket is final")

    # --- state from events --------------------------------------------------------------------

    def when_ticket_created(self, event: dict[str, Any]) -> None:
        self.tenant_id = event["tenant_id"]
        self.requester_id = event["requester_id"]
        self.status = "new"
        self.priority = event["priority"]
        self.tags = _held(event["tags"])
        self.subject = event["subject"]

    def when_ticket_status_changed(self, event: dict[str, Any]) -> None:
        self.status = event["status"]

    def when_ticket_closed(self, event: dict[str, Any]) -> None:
        self.status = "closed"

    def when_ticket_assigned(self, event: dict[str, Any]) -> None:
        self.assignee_id = event["assignee_id"]

    def when_ticket_priority_changed(self, event: dict[str, Any]) -> None:
        self.priority = event["priority"]

    def when_ticket_tags_changed(self, event: dict[str, Any]) -> None:
        self.tags = _held(event["tags"])

    def when_ticket_subject_changed(self, event: dict[str, Any]) -> None:
        self.subject = event["subject"]

    def when_message_added(self, event: dict[str, Any]) -> None:
        pass


def _held(tags: Any) -> tuple[str, ...] | None:
    """Tags as an event holds them: a list, or erased with the ticket's key."""
    return None if is_erased(tags) else tuple(tags)


def _tags(tags: list[str]) -> list[str]:
    """Tags are a set in practice: kept sorted and unique so equal sets compare equal."""
    return sorted({t.strip() for t in tags if t.strip()})
