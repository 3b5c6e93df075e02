"""What audit keeps, beside its migrations: the data map's declaration (kernel.datamap)."""

from kernel.datamap import End, Held, ServiceMap, Table, When, operational, personal, pseudonym

_KEYS = "services.audit.access_keys"
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
                operational("month", "entries of earlier releases: the month whose key"),
                operational("recorded_at"),
                personal(
                    "content",
                    Held.PERIOD_KEY,
                    End(
                        When.PERIOD,
                        "access_log: the tenant's day keys past its period are"
                        " shredded, within a day",
                        f"{_KEYS}:purge",
                    ),
                    End(
                        When.DESTRUCTION,
                        "the tenant's access-log keys are shredded",
                        f"{_KEYS}:destroy_tenant",
                    ),
                    note="the published envelope: ids and states; an access's IP address and"
                    " user agent under its tenant's day key",
                ),
                operational("prev_hash"),
                operational("hash"),
                operational("leaf_hash"),
                operational("access_key", "the tenant's day whose key encrypts IP and agent"),
            ),
            ends=(APPEND_ONLY,),
        ),
        Table(
            "access_log_keys",
            "every access-log key with entries (a tenant's day; a month for older entries),"
            " so a purge reads a row per tenant and day, not the ledger",
            (
                pseudonym("tenant_id"),
                operational("name", "the day (start and length) or the month"),
                operational("ends_at"),
            ),
            ends=(End(When.KEPT, "names and times: the key itself is shredded in the keystore"),),
        ),
        Table(
            "ledger_nodes",
            "the checkpoint tree's perfect subtrees, each stored with the entry that completes"
            " it: roots and proofs from O(log n) rows",
            (
                operational("level"),
                operational("idx"),
                operational("hash", "a Merkle node: a hash of leaf hashes, no content"),
            ),
            ends=(APPEND_ONLY,),
        ),
        Table(
            "ledger_verifications",
            "each run of the verification job: what the verify endpoints report",
            (
                operational("id"),
                operational("started_at"),
                operational("finished_at"),
                operational("from_zero"),
                operational("ok"),
                operational("entries"),
                operational("head_hash"),
                operational("first_bad_seq"),
                operational("first_bad_node_seq"),
                operational("checkpoints"),
                operational("verified_size"),
                operational("compact_range", "Merkle nodes where an intact run ended"),
                operational("logs_ok", "the verdict on the per-tenant logs (null before them)"),
                operational("logs", "tenant logs walked"),
                operational("log_entries", "their entries"),
                operational("bad_logs", "how many failed (a count: no tenant ids kept)"),
            ),
            ends=(End(When.KEPT, "sequence numbers, hashes and verdicts: nobody's data"),),
        ),
        Table(
            "tenant_verifications",
            "how far each tenant's own view of verification has proved its entries, so a call"
            " proves only what came after (a bounded number)",
            (
                pseudonym("tenant_id"),
                operational("verified_size", "the checkpoint its entries were last proved in"),
                operational("last_seq"),
                operational("included"),
                operational("failed"),
                operational("first_bad_seq"),
                operational("checked_at"),
            ),
            ends=(
                End(
                    When.DESTRUCTION,
                    "the tenant's row is deleted",
                    "services.audit.tenant_view:forget",
                ),
            ),
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
                operational("note", "the checkpoint as a signed note (C2SP tlog-checkpoint)"),
            ),
            ends=(APPEND_ONLY,),
        ),
        Table(
            "log_heads",
            "each tenant log's head: the row its appends lock, and its tree's compact range (a"
            " cache verification never trusts)",
            (
                pseudonym("tenant_id", "the log's tenant; the nil uuid for platform entries"),
                operational("size"),
                operational("head_hash"),
                operational("compact_range", "Merkle nodes of the log's tree: no content"),
            ),
            ends=(End(When.KEPT, "ids, counts and hashes: nobody's data"),),
        ),
        Table(
            "log_entries",
            "one entry per event or access in its tenant's own log (issue 23), its canonical"
            " bytes hashed into that log's chain",
            (
                pseudonym("tenant_id", "the log's tenant; the nil uuid for platform entries"),
                operational("seq", "the entry's place in its tenant's log"),
                pseudonym("event_id"),
                operational("type"),
                operational("service"),
                pseudonym("actor_id"),
                pseudonym("subject_ids", "whom the entry concerns, by id"),
                operational("at"),
                operational("access_key", "the tenant's day whose key encrypts IP and agent"),
                operational("recorded_at"),
                personal(
                    "content",
                    Held.PERIOD_KEY,
                    End(
                        When.PERIOD,
                        "access_log: the tenant's day keys past its period are"
                        " shredded, within a day",
                        f"{_KEYS}:purge",
                    ),
                    End(
                        When.DESTRUCTION,
                        "the tenant's access-log keys are shredded",
                        f"{_KEYS}:destroy_tenant",
                    ),
                    note="the published envelope: ids and states; an access's IP address and"
                    " user agent under its tenant's day key",
                ),
                operational("prev_hash"),
                operational("hash"),
                operational("leaf_hash"),
            ),
            ends=(APPEND_ONLY,),
        ),
        Table(
            "log_nodes",
            "each tenant log's perfect subtrees: its roots and proofs from O(log n) of its rows",
            (
                pseudonym("tenant_id"),
                operational("level"),
                operational("idx"),
                operational("hash", "a Merkle node: a hash of leaf hashes, no content"),
            ),
            ends=(APPEND_ONLY,),
        ),
        Table(
            "platform_checkpoints",
            "signed platform checkpoints: the root of a tree over every tenant log's head, and"
            " the frozen single chain's size and root",
            (
                operational("number"),
                operational("logs"),
                operational("root_hash"),
                operational("legacy_size"),
                operational("legacy_root"),
                operational("signed_at"),
                operational("key_id"),
                operational("public_key"),
                operational("signature"),
            ),
            ends=(APPEND_ONLY,),
        ),
        Table(
            "platform_checkpoint_heads",
            "the heads a platform checkpoint signed, one per tenant log: its tree's leaves",
            (
                operational("number"),
                pseudonym("tenant_id"),
                operational("size"),
                operational("root_hash"),
                operational("head_hash"),
            ),
            ends=(APPEND_ONLY,),
        ),
    ),
)
