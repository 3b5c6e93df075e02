"""What audit keeps, beside its migrations: the data map's declaration (kernel.datamap)."""

from kernel.datamap import End, Held, ServiceMap, Table, When, operational, personal, pseudonym

_LEDGER = "services.audit.ledger"
APPEND_ONLY = End(When.KEPT, "append-only and hash-chained: triggers refuse UPDATE and DELETE")

DATA_MAP = ServiceMap(
    service="audit",
    summary="the ledger: every event of every service and every access through the gateway,"
    " hash-chained, with signed checkpoints",
    tables=(
        Table(
            "ledger",
            "one entry per event or access, its canonical bytes hashed into the chain",
            (
                operational("seq"),
                pseudonym("event_id"),
                operational("type"),
                operational("service"),
                pseudonym("tenant_id"),
                pseudonym("actor_id"),
                pseudonym("subject_ids", "whom the entry concerns, by id"),
                operational("at"),
                operational("month", "the period whose key encrypts the access-log fields"),
                operational("recorded_at"),
                personal(
                    "content",
                    Held.PERIOD_KEY,
                    End(When.PERIOD, "access_log: the period's key is shredded", _LEDGER),
                    note="the published envelope: ids and states; an access's IP address and"
                    " user agent under the period's key",
                ),
                operational("prev_hash"),
                operational("hash"),
                operational("leaf_hash"),
            ),
            ends=(APPEND_ONLY,),
        ),
        Table(
            "checkpoints",
            "signed tree heads of the ledger",
            (
                operational("tree_size"),
                operational("root_hash"),
                operational("signed_at"),
                operational("key_id"),
                operational("public_key"),
                operational("signature"),
            ),
            ends=(APPEND_ONLY,),
        ),
    ),
)
