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
_SEALED = "services.tickets.sealed"
_MIGRATION = "services/tickets/migrations/0004_sealed_tags.sql"
# Destruction is the tenant_destroyed event, which the read model applies (a rebuild too).
DESTROYED = End(
    When.DESTRUCTION, "the tenant's rows are deleted", "services.tickets.projections:_forget_tenant"
)
LEARNED_DESTROYED = End(
    When.DESTRUCTION, "the tenant's rows are deleted", f"{_PRIVACY}:destroy_tenant"
)
_SEARCH = "services.tickets.search_index"
SEARCH_DESTROYED = End(
    When.DESTRUCTION, "the tenant's rows are deleted", f"{_SEARCH}:SearchIndexProjection._apply"
)
PURGED = End(
    When.PERIOD, "closed_tickets: the ticket's key is shredded", f"{_PRIVACY}:purge_category"
)

_FILES = "services.tickets.attachment_store:AttachmentStore"
_FILES_DESTROYED = End(
    When.DESTRUCTION,
    "the tenant's attachments are deleted, chunks first; the key is shredded with the tenant's",
    f"{_FILES}.forget_tenant",
)
_UNATTACHED = End(
    When.PERIOD,
    "an upload no message names is deleted a day (LEDGERDESK_DAY_SECONDS) after it began",
    f"{_FILES}.purge_unattached",
)
_FILE_ENDS = (
    SHREDDED_WITH_SUBJECT,
    End(
        When.ERASURE,
        "the requester's tickets' attachments are deleted, chunks first",
        f"{_FILES}.forget_requester",
    ),
    End(
        When.PERIOD,
        "closed_tickets: the purged tickets' attachments are deleted",
        f"{_FILES}.forget_tickets",
    ),
    _FILES_DESTROYED,
    _UNATTACHED,
)
# The same ends in an object store: each deletes the prefixes (every version) through
# ``chunk_store.S3Chunks`` and is answered only once the store acknowledged the deletes.
_CHUNKS = "services.tickets.chunk_store:S3Chunks"
_OBJECTS_DESTROYED = End(
    When.DESTRUCTION,
    "the tenant's prefix is deleted (forget_tenant), every version; the key is shredded with"
    " the tenant's",
    f"{_CHUNKS}.delete_prefix",
)
_OBJECTS_UNATTACHED = End(
    When.PERIOD,
    "an upload no message names: its prefix is deleted a day (LEDGERDESK_DAY_SECONDS) after it"
    " began (purge_unattached), and with it a chunk a failed transaction put",
    f"{_CHUNKS}.delete_file",
)
_OBJECT_ENDS = (
    SHREDDED_WITH_SUBJECT,
    End(
        When.ERASURE,
        "each of the requester's tickets' prefixes is deleted (forget_requester), every version",
        f"{_CHUNKS}.delete_prefix",
    ),
    End(
        When.PERIOD,
        "closed_tickets: each purged ticket's prefix is deleted (forget_tickets)",
        f"{_CHUNKS}.delete_prefix",
    ),
    _OBJECTS_DESTROYED,
    _OBJECTS_UNATTACHED,
)
_MAIL = "kernel.mail.sender"
MAIL_ERASED = End(When.ERASURE, "the requester's rows are deleted", f"{_PRIVACY}:erase_subject")
MAIL_PURGED = End(
    When.PERIOD,
    "closed_tickets: the purged tickets' rows are deleted",
    f"{_PRIVACY}:purge_category",
)
MAIL_DESTROYED = End(
    When.DESTRUCTION, "the tenant's rows are deleted", f"{_PRIVACY}:destroy_tenant"
)
MAIL_SENT = End(
    When.PERIOD,
    "dropped when the mail is sent or fails for good",
    f"{_MAIL}:MailSender.record",
)
MAIL_KEPT = End(
    When.PERIOD,
    "LEDGERDESK_MAIL_KEEP_DAYS (7) after the mail was sent or failed",
    "kernel.mail.outbox:purge_finished",
)
MAIL_IN_ERASED = End(When.ERASURE, "the requester's rows are deleted", f"{_PRIVACY}:erase_subject")
MAIL_IN_PURGED = End(
    When.PERIOD,
    "closed_tickets: the purged tickets' rows are deleted",
    f"{_PRIVACY}:purge_category",
)
MAIL_IN_DESTROYED = End(
    When.DESTRUCTION,
    "the tenant's rows are deleted; its key is shredded, so no digest can be computed again",
    f"{_PRIVACY}:destroy_tenant",
)
MAIL_IN_EXPIRED = End(
    When.PERIOD,
    "LEDGERDESK_MAIL_IN_DEDUP_DAYS (30) after the mail was received",
    "services.tickets.mail_in:forget_expired",
)

# Under the ticket's key (personal_fields); the declaration adds what the type cannot say.
_TAGS = personal(
    "tags",
    Held.SUBJECT_KEY,
    note="labels staff type freely; events of releases before they were sealed hold them in"
    " plaintext",
)

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
                personal(
                    "tags",
                    Held.PLAINTEXT,
                    End(When.RETIRED, "emptied; new rows leave it empty", _MIGRATION),
                    End(
                        When.RETIRED,
                        "an older replica's writes emptied, and sealed",
                        f"{_SEALED}:seal_batch",
                    ),
                    note="empty; an older replica's rows during a rolling upgrade only, until"
                    " sealed; dropped by a later release",
                ),
                personal(
                    "tags_sealed",
                    Held.SUBJECT_KEY,
                    SHREDDED_WITH_SUBJECT,
                    PURGED,
                    DESTROYED,
                    note="labels staff type freely; card numbers refused",
                ),
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
            "ticket_tag_digests",
            "the blind index of tags (services.tickets.lookups): a keyed hash of each tag of a"
            " ticket, never the tag",
            (
                pseudonym("ticket_id"),
                pseudonym("tenant_id"),
                personal(
                    "digest",
                    Held.KEYED_HASH,
                    End(
                        When.ERASURE,
                        "the rows of the requester's tickets are deleted",
                        f"{_PRIVACY}:erase_subject",
                    ),
                    End(
                        When.PERIOD,
                        "closed_tickets: the purged tickets' rows are deleted",
                        f"{_PRIVACY}:purge_category",
                    ),
                    End(
                        When.DESTRUCTION,
                        "the tenant's rows are deleted; the key is shredded with the tenant's",
                        "services.tickets.projections:TagIndexProjection.apply",
                    ),
                    End(
                        When.REPLACED,
                        "a change of tags replaces the ticket's rows",
                        "services.tickets.projections:TagIndexProjection.apply",
                    ),
                    note="HMAC-SHA-256 of the caseless tag under a key derived from the tenant's"
                    " (kernel.crypto.blind_index): it confirms a guessed tag only to whoever holds"
                    " that key, and no one once the tenant is destroyed",
                ),
            ),
        ),
        Table(
            "search_terms",
            "the search index (services.tickets.search_index): per part of a ticket (subject,"
            " body, each message), a keyed hash of each word's first 3 to 16 letters, never a"
            " word",
            (
                pseudonym("ticket_id"),
                pseudonym("tenant_id"),
                pseudonym("requester_id", note="whose erasure deletes the row"),
                pseudonym(
                    "author_id",
                    note="a message's writer, for a message written before tickets had keys of"
                    " their own (under the writer's key), whose erasure deletes it too; null"
                    " otherwise",
                ),
                operational("part"),
                pseudonym("message_id"),
                operational("internal"),
                personal(
                    "digest",
                    Held.KEYED_HASH,
                    End(
                        When.ERASURE,
                        "the rows of the requester's tickets (and of messages under the"
                        " writer's key) are deleted",
                        f"{_PRIVACY}:erase_subject",
                    ),
                    End(
                        When.PERIOD,
                        "closed_tickets: the purged tickets' rows are deleted",
                        f"{_PRIVACY}:purge_category",
                    ),
                    End(
                        When.DESTRUCTION,
                        "the tenant's rows are deleted and its key is shredded with the"
                        " tenant's, so no digest can be computed again",
                        f"{_SEARCH}:SearchIndexProjection._apply",
                    ),
                    End(
                        When.REPLACED,
                        "a new subject replaces the subject's rows",
                        f"{_SEARCH}:SearchIndexProjection._apply",
                    ),
                    note="HMAC-SHA-256, cut to 16 bytes, under a key derived from the tenant's"
                    " (kernel.crypto.blind_index): it confirms a guessed word only to whoever holds"
                    " that key, and to no one once the tenant is destroyed; which tickets share a"
                    " word shows",
                ),
            ),
            ends=(SEARCH_DESTROYED,),
        ),
        Table(
            "attachments",
            "files on messages (services.tickets.attachment_store): their name and digest as"
            " stored ciphertext under the ticket's key, their size and sniffed type; the bytes"
            " are in attachment_chunks, or in the object store's bucket (below) when so"
            " configured: these rows are its index either way",
            (
                pseudonym("id"),
                pseudonym("tenant_id"),
                pseudonym("ticket_id"),
                pseudonym("requester_id", note="whose erasure deletes the row"),
                pseudonym("uploaded_by"),
                pseudonym("message_id", note="null until a message names it"),
                personal(
                    "filename",
                    Held.SUBJECT_KEY,
                    *_FILE_ENDS,
                    note="as the client named the file, card numbers cut to the last four",
                ),
                personal(
                    "sha256",
                    Held.SUBJECT_KEY,
                    *_FILE_ENDS,
                    note="a digest of the bytes would confirm a guessed file: sealed with the name",
                ),
                operational("content_type", note="sniffed from the first bytes"),
                operational("size"),
                operational("chunks"),
                operational("state"),
                operational("created_at"),
            ),
            ends=(_FILES_DESTROYED, _UNATTACHED),
        ),
        Table(
            "attachment_chunks",
            "the bytes of files, in chunks of at most 256 KiB, each sealed under the ticket's"
            " key and bound to its file and place (kernel.crypto.blobs), with the default"
            " LEDGERDESK_ATTACHMENT_STORE=database (empty with s3)",
            (
                pseudonym("attachment_id"),
                operational("seq"),
                personal(
                    "ciphertext",
                    Held.SUBJECT_KEY,
                    *_FILE_ENDS,
                    note="whatever the file holds: not scanned for card numbers (binary)",
                ),
            ),
            ends=(_FILES_DESTROYED, _UNATTACHED),
        ),
        Table(
            "mail_outbox",
            "public replies owed to or sent to requesters by mail (kernel.mail): ids, states,"
            " reply codes and times; the message itself sealed",
            (
                pseudonym("id"),
                pseudonym("tenant_id"),
                pseudonym("recipient_id", "the requester, by id"),
                pseudonym("key_subject_id", "the ticket whose key seals the message"),
                operational("kind"),
                pseudonym("reference_id", "the ticket message the mail carries"),
                pseudonym(
                    "message_id",
                    "the Message-ID header, built from the message's id and the sender's"
                    " domain only",
                ),
                personal(
                    "sealed",
                    Held.SUBJECT_KEY,
                    SHREDDED_WITH_SUBJECT,
                    MAIL_ERASED,
                    MAIL_PURGED,
                    MAIL_SENT,
                    note="the rendered message (recipient's name and address, the ticket's"
                    " subject, the reply) and its envelope, AES-GCM under the ticket's key (a"
                    " child of the requester's)",
                ),
                operational("status"),
                operational("attempts"),
                operational("next_attempt_at"),
                operational("last_code", "the relay's reply code, never its text"),
                operational("last_outcome"),
                operational("created_at"),
                operational("finished_at"),
            ),
            ends=(MAIL_ERASED, MAIL_PURGED, MAIL_DESTROYED, MAIL_KEPT),
        ),
        Table(
            "mail_in_received",
            "inbound mail stored (services.tickets.mail_in): what a re-sent mail is recognised"
            " by, so a relay's retry makes no second ticket; ids and a keyed hash only",
            (
                pseudonym("tenant_id"),
                personal(
                    "digest",
                    Held.KEYED_HASH,
                    MAIL_IN_ERASED,
                    MAIL_IN_PURGED,
                    MAIL_IN_DESTROYED,
                    MAIL_IN_EXPIRED,
                    note="HMAC-SHA-256 of the sender's address and the mail's Message-ID under"
                    " a key derived from the tenant's (kernel.crypto.blind_index, kind"
                    " `mail_in`): it confirms a guessed pair only to whoever holds that key, and"
                    " to no one once the tenant is destroyed",
                ),
                pseudonym("ticket_id", "the ticket the mail opened or continued"),
                pseudonym("requester_id", "the sender, as the contact accounts matched"),
                pseudonym("message_id", "the message it became (null: it opened the ticket)"),
                operational("received_at"),
            ),
            ends=(MAIL_IN_ERASED, MAIL_IN_PURGED, MAIL_IN_DESTROYED, MAIL_IN_EXPIRED),
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
            ends=(LEARNED_DESTROYED,),
        ),
        Table(
            "restrictions",
            "requesters whose data is kept but not processed further",
            (pseudonym("subject_id"), pseudonym("tenant_id"), operational("restricted_at")),
            ends=(LEARNED_DESTROYED,),
        ),
    ),
    objects=(
        Table(
            "attachment chunks (LEDGERDESK_ATTACHMENT_S3_BUCKET)",
            "with LEDGERDESK_ATTACHMENT_STORE=s3, the bytes of files in place of"
            " attachment_chunks: one object a chunk of at most 256 KiB, under the key"
            " `<tenant_id>/<ticket_id>/<attachment_id>/<seq>` (ids only, never a file's name),"
            " sealed in tickets under the ticket's key and bound to its file and place"
            " (kernel.crypto.blobs) before it leaves; the attachments rows stay the index",
            (
                pseudonym("tenant_id", note="the key's first part"),
                pseudonym("ticket_id", note="the key's second part"),
                pseudonym("attachment_id", note="the key's third part"),
                operational("seq", note="the key's last part"),
                personal(
                    "body",
                    Held.SUBJECT_KEY,
                    *_OBJECT_ENDS,
                    note="whatever the file holds; the store never sees it in clear. A bucket"
                    " with versioning on keeps a replaced or deleted version: the deletes"
                    " remove every version, and a lifecycle rule expiring non-current versions"
                    " covers what they could not reach (docs/operations.md)",
                ),
            ),
            ends=(_OBJECTS_DESTROYED, _OBJECTS_UNATTACHED),
        ),
    ),
    registries=(REGISTRY,),
    event_fields={
        "ticket_created": {"tags": _TAGS},
        "ticket_tags_changed": {"tags": _TAGS},
        "mail_sent": {"kind": operational("kind", "the kind of mail (`ticket_reply`)")},
        "mail_failed": {
            "kind": operational("kind", "the kind of mail (`ticket_reply`)"),
            "outcome": operational("outcome", "`permanent`, `temporary` or `unrecorded`"),
        },
    },
)
