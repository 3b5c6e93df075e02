"""What tickets keeps, beside its migrations: the data map's declaration (kernel.datamap)."""

from kernel.datamap import (
    SHREDDED_WITH_SUBJECT,
    End,
    Held,
    ServiceMap,
    Table,
    When,
    operational,
    personal,
    pseudonym,
)
from services.tickets.events import REGISTRY

_PRIVACY = "services.tickets.privacy"
DESTROYED = End(When.DESTRUCTION, "the tenant's rows are deleted", _PRIVACY)
PURGED = End(When.PERIOD, "closed_tickets: the ticket's key is shredded", _PRIVACY)

DATA_MAP = ServiceMap(
    service="tickets",
    summary="tickets and their messages; their words are encrypted under each ticket's own key,"
    " a child of its requester's key, in the event store and in the read models alike",
    tables=(
        Table(
            "tickets",
            "a ticket: its words as stored ciphertext, status, priority, people by id",
            (
                pseudonym("id"),
                pseudonym("tenant_id"),
                pseudonym("requester_id"),
                personal("subject", Held.SUBJECT_KEY, SHREDDED_WITH_SUBJECT, PURGED, DESTROYED),
                personal("body", Held.SUBJECT_KEY, SHREDDED_WITH_SUBJECT, PURGED, DESTROYED),
                operational("status"),
                operational("priority"),
                pseudonym("assignee_id"),
                operational("tags", "labels staff choose; card numbers refused"),
                operational("version"),
                operational("created_at"),
                operational("updated_at"),
                operational("closed_at"),
                operational("erased_at"),
            ),
            ends=(DESTROYED,),
        ),
        Table(
            "ticket_messages",
            "public replies and internal notes, as stored ciphertext",
            (
                pseudonym("id"),
                pseudonym("ticket_id"),
                pseudonym("tenant_id"),
                pseudonym("author_id"),
                operational("author_kind"),
                personal("body", Held.SUBJECT_KEY, SHREDDED_WITH_SUBJECT, PURGED, DESTROYED),
                operational("internal"),
                operational("created_at"),
                operational("seq"),
            ),
            ends=(DESTROYED,),
        ),
        Table(
            "directory",
            "who exists (agents, contacts), learned from accounts' events: ids and states",
            (
                pseudonym("subject_id"),
                pseudonym("tenant_id"),
                operational("kind"),
                operational("active"),
                operational("version"),
            ),
            ends=(DESTROYED,),
        ),
        Table(
            "restrictions",
            "requesters whose data is kept but not processed further",
            (pseudonym("subject_id"), pseudonym("tenant_id"), operational("restricted_at")),
            ends=(DESTROYED,),
        ),
    ),
    registries=(REGISTRY,),
    event_fields={
        "ticket_created": {"tags": operational("tags", "labels staff choose")},
        "ticket_tags_changed": {"tags": operational("tags", "labels staff choose")},
    },
)
