"""What retention keeps, beside its migrations: the data map's declaration (kernel.datamap)."""

from kernel.datamap import (
    Column,
    End,
    Held,
    ServiceMap,
    Table,
    When,
    operational,
    personal,
    pseudonym,
)
from services.retention.events import DECISIONS, MESSAGES

_SEALED = "services.retention.sealed"
_EXPORTS = "services.retention.tenant_exports"
_EXPORT_GONE = End(
    When.DESTRUCTION,
    "rows deleted when the tenant's destruction completes (its keys shredded with it)",
    f"{_EXPORTS}:forget_tenant",
)
KEPT = End(When.KEPT, "the record of what was done, by ids: evidence the promise was kept")

_REASON_SEALED = personal(
    "reason_sealed",
    Held.TENANT_KEY,
    note="the deciding admin's reason (free text) as retention keeps it, so the ledger's copy"
    " is unreadable once the tenant's key is shredded",
)


def _change_table(name: str, holds: str, *own: Column) -> Table:
    """A kind of change that waits for a second admin (``services.retention.four_eyes``): what
    it changes, then who filed and decided it, when, and why (sealed)."""
    return Table(
        name,
        holds,
        (
            pseudonym("id"),
            pseudonym("tenant_id"),
            *own,
            pseudonym("filed_by"),
            pseudonym(
                "filed_key_issuer",
                "whom the filer's key answered to, for four eyes (from accounts, by id)",
            ),
            operational("status"),
            operational("created_at"),
            pseudonym("decided_by"),
            operational("decided_at"),
            personal(
                "decision_reason_sealed",
                Held.TENANT_KEY,
                End(When.DESTRUCTION, "the tenant's key is shredded", f"{_SEALED}:destroy_tenant"),
                note="the approving or denying admin's reason (free text)",
            ),
        ),
        ends=(KEPT,),
    )


DATA_MAP = ServiceMap(
    service="retention",
    summary="retention policies, schedules, the registry of services, and data-subject"
    " requests as persisted plans with every service's answer",
    tables=(
        Table(
            "services",
            "each service's announcement: its data categories and commands",
            (
                operational("name"),
                operational("categories"),
                operational("commands"),
                operational("protocol_version"),
                operational("announced_at"),
            ),
            ends=(End(When.REPLACED, "the next announcement"),),
        ),
        Table(
            "requests",
            "data-subject requests and destructions: who, what, status, the signed receipt",
            (
                pseudonym("id"),
                pseudonym("tenant_id"),
                operational("type"),
                operational("subject_kind"),
                pseudonym("subject_id"),
                pseudonym("filed_by"),
                pseudonym(
                    "filed_key_issuer",
                    "whom the filer's key answered to, for four eyes (from accounts, by id)",
                ),
                personal(
                    "identity_check",
                    Held.PLAINTEXT,
                    End(
                        When.RETIRED,
                        "sealed into identity_check_sealed on start",
                        f"{_SEALED}:seal_legacy",
                    ),
                    note="rows of older releases only, until sealed",
                ),
                personal(
                    "identity_check_sealed",
                    Held.TENANT_KEY,
                    End(
                        When.DESTRUCTION,
                        "the tenant's key is shredded",
                        f"{_SEALED}:destroy_tenant",
                    ),
                    note="how the admin checked the requester's identity (free text)",
                ),
                operational("status"),
                operational("created_at"),
                operational("due_at"),
                operational("due_soon_at", "when its nearing deadline was announced"),
                operational("completed_at"),
                operational("receipt", "signed: ids, statuses and ledger references"),
                pseudonym("decided_by"),
                operational("decided_at"),
                operational("decision"),
                personal(
                    "decision_reason",
                    Held.PLAINTEXT,
                    End(
                        When.RETIRED,
                        "sealed into decision_reason_sealed on start",
                        f"{_SEALED}:seal_legacy",
                    ),
                    note="rows of older releases only, until sealed",
                ),
                personal(
                    "decision_reason_sealed",
                    Held.TENANT_KEY,
                    End(
                        When.DESTRUCTION,
                        "the tenant's key is shredded",
                        f"{_SEALED}:destroy_tenant",
                    ),
                    note="the approving or denying admin's reason (free text)",
                ),
            ),
            ends=(KEPT,),
        ),
        Table(
            "request_services",
            "each service's part of a request and its answer",
            (
                pseudonym("request_id"),
                operational("service"),
                operational("status"),
                operational("detail", "the service's own words: what it did, counts"),
                operational("basis", "a legal hold's basis"),
                operational("until"),
                pseudonym("answer_event_id"),
                operational("answered_at"),
                operational("attempts"),
                operational("last_sent_at"),
                operational("next_attempt_at"),
            ),
            ends=(KEPT,),
        ),
        Table(
            "schedules",
            "clocks that run out: a cancelled tenant's grace",
            (
                pseudonym("tenant_id"),
                operational("kind"),
                operational("due_at"),
                operational("status"),
                pseudonym("request_id"),
            ),
            ends=(KEPT,),
        ),
        Table(
            "policies",
            "retention periods per data category, per tenant or the default",
            (operational("category"), pseudonym("tenant_id"), operational("days")),
            ends=(KEPT,),
        ),
        Table(
            "purge_cutoffs",
            "the latest cut-off each purge went out with, per category and tenant (NULL: the"
            " default), so a restored service forgets again what was purged",
            (
                operational("category"),
                pseudonym("tenant_id"),
                operational("before"),
                pseudonym("request_id"),
                operational("issued_at"),
            ),
            ends=(KEPT,),
        ),
        Table(
            "approval_policies",
            "which request types wait for a second admin, per tenant",
            (pseudonym("tenant_id"), operational("types")),
            ends=(KEPT,),
        ),
        _change_table(
            "approval_policy_changes",
            "changes that lift or narrow an approval policy, waiting for or decided by another"
            " admin",
            operational("types", "the policy once approved"),
            operational("based_on", "the policy it was filed against"),
        ),
        _change_table(
            "retention_period_changes",
            "shortened retention periods waiting for or decided by another admin, while the"
            " tenant's approval policy names erasure",
            operational("category"),
            operational("days", "the period once approved"),
            operational("based_on_days", "the period it was filed against"),
        ),
        Table(
            "tenant_exports",
            "each tenant's whole exports: who asked, status, progress, counts, the archive's"
            " size and SHA-256, how it ended (ids, states, counts and times)",
            (
                pseudonym("id"),
                pseudonym("tenant_id"),
                pseudonym("requested_by"),
                operational("status"),
                operational("created_at", "also the moment the export is as of"),
                operational("attempts"),
                operational("lease_until", "its builder's claim"),
                operational("started_at"),
                operational("rows_expected"),
                operational("rows_done"),
                operational("ready_at"),
                operational("expires_at"),
                operational("counts", "rows per kind"),
                operational("chunks"),
                operational("archive_bytes"),
                operational("archive_sha256"),
                operational("ended_at"),
                operational("end_reason"),
                pseudonym("ended_by", "the erasure request that ended it"),
            ),
            ends=(_EXPORT_GONE,),
        ),
        Table(
            "tenant_export_chunks",
            "a tenant's whole export: the archive's bytes (every contact, agent, ticket,"
            " message, attached file, consent record, invoice and ledger entry of the tenant)"
            " in sealed chunks",
            (
                pseudonym("export_id"),
                operational("seq"),
                personal(
                    "sealed",
                    Held.SUBJECT_KEY,
                    End(
                        When.TTL,
                        "LEDGERDESK_EXPORT_TTL_SECONDS after it is ready: chunks deleted, the"
                        " export's key shredded",
                        f"{_EXPORTS}:expire_due",
                    ),
                    End(
                        When.ERASURE,
                        "of anyone in the tenant: every export made before the erasure"
                        " completed is deleted and its key shredded, in the completion's"
                        " transaction",
                        f"{_EXPORTS}:end_for_erasure",
                    ),
                    End(
                        When.DESTRUCTION,
                        "the tenant's key is shredded (the export's key is under it) and the"
                        " rows deleted",
                        f"{_EXPORTS}:forget_tenant",
                    ),
                    note="AES-256-GCM under the export's own key (subject = the export's id,"
                    " under the tenant's key in retention's keystore), each chunk bound to its"
                    " export and place",
                ),
            ),
            ends=(_EXPORT_GONE,),
        ),
        Table(
            "closed_tickets",
            "when each closed ticket closed, so its words are purged on time: ids and times",
            (
                pseudonym("ticket_id"),
                pseudonym("tenant_id"),
                operational("closed_at"),
                operational("purged_at"),
            ),
            ends=(KEPT,),
        ),
    ),
    messages=(MESSAGES,),
    event_fields={
        **{
            f"privacy_request_{decision}": {
                "decision": operational("decision"),
                "reason_sealed": _REASON_SEALED,
            }
            for decision in DECISIONS
        },
        **{
            f"approval_policy_change_{decision}": {
                "decision": operational("decision"),
                "reason_sealed": _REASON_SEALED,
            }
            for decision in DECISIONS
        },
        "approval_policy_change_filed": {
            "requires_approval": operational("requires_approval", "request types"),
            "based_on": operational("based_on", "request types"),
        },
        "approval_policy_changed": {
            "requires_approval": operational("requires_approval", "request types"),
        },
        **{
            f"retention_period_change_{decision}": {
                "decision": operational("decision"),
                "reason_sealed": _REASON_SEALED,
            }
            for decision in DECISIONS
        },
        "retention_period_change_filed": {
            "category": operational("category", "a data category's name"),
            "days": operational("days"),
            "based_on_days": operational("based_on_days"),
        },
        "retention_period_changed": {
            "category": operational("category", "a data category's name"),
            "days": operational("days"),
        },
        "tenant_export_ready": {
            "counts": operational("counts", "rows per kind of the archive"),
            "archive_sha256": operational("archive_sha256", "the archive's hash"),
        },
    },
)
