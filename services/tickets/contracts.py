"""What tickets shows the rest of the platform: the only module of ``services.tickets`` that
the gateway and other services import (``make lint`` holds them to it; pyproject.toml,
``[tool.importlinter]``).

The command schemas are the HTTP API's requests as well (the gateway validates with them, then
tickets again; ``FindTicketsV1`` says what the list may be narrowed to, ``SearchTicketsV1`` what
a search takes), and its statuses and priorities are the API's too; the subscriptions are the
queues it consumes, which the gateway's dead-letter endpoints are limited to. Everything else in
the package is tickets' own.
"""

from services.tickets.commands import (
    CHUNK_BYTES,
    AddMessageV1,
    CreateTicketV1,
    FindTicketsV1,
    SearchTicketsV1,
    UpdateTicketV1,
    UploadAttachmentV1,
)
from services.tickets.events import PRIORITIES, STATUSES
from services.tickets.subscriptions import SUBSCRIPTIONS

__all__ = [
    "CHUNK_BYTES",
    "PRIORITIES",
    "STATUSES",
    "SUBSCRIPTIONS",
    "AddMessageV1",
    "CreateTicketV1",
    "FindTicketsV1",
    "SearchTicketsV1",
    "UpdateTicketV1",
    "UploadAttachmentV1",
]
