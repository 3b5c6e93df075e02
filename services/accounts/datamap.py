"""What accounts keeps, beside its migrations: the data map's declaration (kernel.datamap)."""

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
    secret,
)
from services.accounts.events import REGISTRY

_PRIVACY = "services.accounts.privacy"
# Destruction is the tenant_destroyed event, which the read models apply (a rebuild too).
_PROJECTIONS = "services.accounts.projections"
SCRUBBED = End(When.ERASURE, "scrubbed to [erased]", f"{_PRIVACY}:erase_subject")
COMPANY_ERASED = End(
    When.DESTRUCTION, "scrubbed to [erased]", f"{_PROJECTIONS}:TenantsProjection.apply"
)
AGENT_ERASED = End(
    When.DESTRUCTION, "scrubbed to [erased]", f"{_PROJECTIONS}:AgentsProjection.apply"
)
KEYS_REVOKED = End(
    When.DESTRUCTION, "revoked: it authenticates no one", f"{_PROJECTIONS}:AgentsProjection.apply"
)
CONTACTS_DELETED = End(
    When.DESTRUCTION, "the tenant's rows are deleted", f"{_PROJECTIONS}:ContactsProjection.apply"
)

NOTICES_DELETED = End(
    When.DESTRUCTION,
    "the tenant's notices and acknowledgements are deleted; the events' copy is under the"
    " tenant's key, shredded with it",
    f"{_PROJECTIONS}:IncidentsProjection.apply",
)

_MAIL = "kernel.mail.sender"
MAIL_ERASED = End(When.ERASURE, "the agent's rows are deleted", f"{_PRIVACY}:erase_subject")
MAIL_DESTROYED = End(
    When.DESTRUCTION, "the tenant's rows are deleted", f"{_PRIVACY}:destroy_tenant"
)
MAIL_SENT = End(
    When.PERIOD, "dropped when the mail is sent or fails for good", f"{_MAIL}:MailSender.record"
)
MAIL_KEPT = End(
    When.PERIOD,
    "LEDGERDESK_MAIL_KEEP_DAYS (7) after the mail was sent or failed",
    "kernel.mail.outbox:purge_finished",
)
_MAIL_KINDS = "the kind of notice (`privacy_request_completed`, `policy_version`, ...)"

DATA_MAP = ServiceMap(
    service="accounts",
    summary="tenants, agents (staff), contacts (end customers), API keys, consent and policy"
    " acceptance; read models rebuilt from its events",
    tables=(
        Table(
            "tenants",
            "a tenant: company, region, plan, status",
            (
                pseudonym("id"),
                personal("company", Held.PLAINTEXT, COMPANY_ERASED),
                operational("region"),
                operational("status"),
                operational("plan"),
                operational("created_at"),
                operational("version"),
                operational("destroy_after"),
            ),
            ends=(End(When.KEPT, "a destroyed tenant's row stays, scrubbed, as its tombstone"),),
        ),
        Table(
            "agents",
            "staff users of a tenant",
            (
                pseudonym("id"),
                pseudonym("tenant_id"),
                operational("role"),
                personal("name", Held.PLAINTEXT, SCRUBBED, AGENT_ERASED),
                personal("email", Held.PLAINTEXT, SCRUBBED, AGENT_ERASED),
                operational("active"),
                operational("created_at"),
                operational("deactivated_at"),
            ),
            ends=(End(When.KEPT, "ids and roles stay, scrubbed, for the audit trail"),),
        ),
        Table(
            "api_keys",
            "API keys as keyed hashes (HMAC-SHA-256 under the platform's secret)",
            (
                secret(
                    "key_hash",
                    Held.KEYED_HASH,
                    KEYS_REVOKED,
                    End(
                        When.ERASURE,
                        "the agent is deactivated, which revokes its keys",
                        f"{_PROJECTIONS}:AgentsProjection.apply",
                    ),
                ),
                pseudonym("key_id"),
                pseudonym("agent_id"),
                operational("issued_at"),
                operational("revoked_at"),
                pseudonym(
                    "issuer_id",
                    "whom the key answers to for four eyes (NULL: issued before it was recorded)",
                ),
            ),
        ),
        Table(
            "contacts",
            "end customers of a tenant",
            (
                pseudonym("id"),
                pseudonym("tenant_id"),
                personal("name", Held.PLAINTEXT, SCRUBBED, CONTACTS_DELETED),
                personal("email", Held.PLAINTEXT, SCRUBBED, CONTACTS_DELETED),
                personal("phone", Held.PLAINTEXT, SCRUBBED, CONTACTS_DELETED),
                operational("marketing"),
                operational("version"),
                operational("created_at"),
                operational("updated_at"),
            ),
        ),
        Table(
            "consents",
            "every marketing-consent record of a contact",
            (
                pseudonym("contact_id"),
                pseudonym("tenant_id"),
                operational("marketing"),
                personal(
                    "source",
                    Held.PLAINTEXT,
                    SCRUBBED,
                    note="how the consent was given (free text: a form, a call, who asked);"
                    " under the contact's key in the events",
                ),
                operational("policy_version"),
                operational("recorded_at"),
                operational("version"),
            ),
            ends=(CONTACTS_DELETED,),
        ),
        Table(
            "policies",
            "published policy versions",
            (operational("version"), operational("published_at"), operational("seq")),
            ends=(End(When.KEPT, "platform-wide, no one's data"),),
        ),
        Table(
            "policy_acceptances",
            "which agent accepted which policy version, when",
            (
                pseudonym("agent_id"),
                pseudonym("tenant_id"),
                operational("version"),
                operational("accepted_at"),
            ),
            ends=(
                End(
                    When.DESTRUCTION,
                    "the tenant's rows are deleted",
                    f"{_PROJECTIONS}:PoliciesProjection.apply",
                ),
            ),
        ),
        Table(
            "lookup_digests",
            "the blind index of people (services.accounts.lookups): per person and kind"
            " (contact_email, contact_phone, agent_email), a keyed hash of the normalised value,"
            " never the value",
            (
                pseudonym("subject_id"),
                operational("kind"),
                pseudonym("tenant_id"),
                personal(
                    "digest",
                    Held.KEYED_HASH,
                    End(When.ERASURE, "the person's rows are deleted", f"{_PRIVACY}:erase_subject"),
                    End(
                        When.DESTRUCTION,
                        "the tenant's rows are deleted; the key is shredded with the tenant's",
                        f"{_PROJECTIONS}:LookupsProjection.apply",
                    ),
                    End(
                        When.REPLACED,
                        "a rectification replaces it; no phone, no row",
                        f"{_PROJECTIONS}:LookupsProjection._index",
                    ),
                    note="HMAC-SHA-256 under a key derived from the tenant's"
                    " (kernel.crypto.blind_index): it confirms a guessed value only to whoever"
                    " holds that key, and no one once the tenant is destroyed",
                ),
            ),
        ),
        Table(
            "incidents",
            "personal-data breaches as the operator declared them: which tenants, since when"
            " known (ids and times only)",
            (
                pseudonym("id"),
                pseudonym("tenant_ids", "the affected tenants"),
                operational("aware_at", "when the operator became aware: the 72 hours run"),
                operational("created_at", "when it was declared"),
            ),
            ends=(
                End(
                    When.KEPT,
                    "the platform's record of its breaches (Art. 33(5)); a destroyed tenant's"
                    " notice goes, its id stays",
                ),
            ),
        ),
        Table(
            "incident_notices",
            "each affected tenant's notice of a breach: what happened and the categories of"
            " data concerned, as the operator wrote them, and whom it was sent to",
            (
                pseudonym("id", "the incident"),
                pseudonym("tenant_id"),
                operational("categories", "a fixed vocabulary (BREACH_CATEGORIES)"),
                personal(
                    "description",
                    Held.PLAINTEXT,
                    NOTICES_DELETED,
                    note="the operator's free text: it may describe people; under the tenant's"
                    " key in the events",
                ),
                operational("aware_at"),
                pseudonym("notified_ids", "the tenant's admins it was sent to"),
                operational("created_at", "when it was sent"),
            ),
            ends=(NOTICES_DELETED,),
        ),
        Table(
            "incident_acknowledgements",
            "which admin acknowledged which breach notice, when",
            (
                pseudonym("incident_id"),
                pseudonym("tenant_id"),
                pseudonym("agent_id"),
                operational("acknowledged_at"),
            ),
            ends=(NOTICES_DELETED,),
        ),
        Table(
            "restrictions",
            "subjects whose data is kept but not used",
            (
                pseudonym("subject_id"),
                pseudonym("tenant_id"),
                pseudonym("request_id"),
                operational("restricted_at"),
            ),
            ends=(
                End(
                    When.REPLACED,
                    "deleted when the restriction is lifted",
                    f"{_PRIVACY}:lift_restriction",
                ),
                End(
                    When.DESTRUCTION, "the tenant's rows are deleted", f"{_PRIVACY}:destroy_tenant"
                ),
            ),
        ),
        Table(
            "mail_outbox",
            "notices owed to or sent to a tenant's agents and admins by mail (kernel.mail,"
            " services.accounts.notices): ids, states, reply codes and times; the message itself"
            " sealed",
            (
                pseudonym("id"),
                pseudonym("tenant_id"),
                pseudonym("recipient_id", "the agent, by id"),
                pseudonym("key_subject_id", "the agent whose key seals the message (the same)"),
                operational("kind", _MAIL_KINDS),
                pseudonym(
                    "reference_id",
                    "what the notice is about: a privacy request, a policy version's publication",
                ),
                pseudonym(
                    "message_id",
                    "the Message-ID header, built from the kind, the reference's and the"
                    " recipient's ids and the sender's domain only",
                ),
                personal(
                    "sealed",
                    Held.SUBJECT_KEY,
                    SHREDDED_WITH_SUBJECT,
                    MAIL_ERASED,
                    MAIL_SENT,
                    note="the rendered message (the agent's name and address, the notice's"
                    " subject and text) and its envelope, AES-GCM under the agent's key",
                ),
                operational("status"),
                operational("attempts"),
                operational("next_attempt_at"),
                operational("last_code", "the relay's reply code, never its text"),
                operational("last_outcome"),
                operational("created_at"),
                operational("finished_at"),
            ),
            ends=(MAIL_ERASED, MAIL_DESTROYED, MAIL_KEPT),
        ),
        Table(
            "policy_notice_jobs",
            "the mailing of each published policy version to the agents who have not accepted it"
            " (services.accounts.notices): where it stands",
            (
                operational("version"),
                operational("reference_id", "the policy_published event's id"),
                operational("published_at"),
                pseudonym(
                    "after_agent",
                    "the last agent of the last page mailed (a position, across tenants);"
                    " cleared when the mailing ends",
                ),
                operational("mailed"),
                operational("status"),
                operational("created_at"),
                operational("finished_at"),
            ),
            ends=(
                End(
                    When.KEPT,
                    "platform-wide, no one's data: the agent id goes when the mailing ends",
                    "services.accounts.notices:work_policy_notices",
                ),
            ),
        ),
    ),
    registries=(REGISTRY,),
    event_fields={
        "tenant_created": {
            "region": operational("region"),
            "plan": operational("plan"),
            "policy_version": operational("policy_version"),
        },
        "tenant_region_changed": {
            "region": operational("region"),
            "previous_region": operational("previous_region"),
        },
        "api_key_issued": {
            "key_hash": secret(
                "key_hash",
                Held.KEYED_HASH,
                note="HMAC-SHA-256 of the key, never the key; left out of the published copy",
            )
        },
        "policy_accepted": {"version": operational("version")},
        "consent_recorded": {
            "source": personal(
                "source",
                Held.SUBJECT_KEY,
                note="how the consent was given (free text); events of releases before it was"
                " sealed hold it in plaintext",
            ),
            "policy_version": operational("policy_version"),
        },
        "policy_published": {"version": operational("version")},
        "incident_notified": {
            "categories": operational(
                "categories",
                "a fixed vocabulary; under the tenant's key, left out of the published copy",
            ),
            "description": personal(
                "description",
                Held.TENANT_KEY,
                note="the operator's free text; left out of the published copy",
            ),
        },
        "billing_contact_disclosed": {
            "disclosed_to": operational("disclosed_to", "the service that asked")
        },
        "mail_address_disclosed": {
            "disclosed_to": operational("disclosed_to", "the service that asked"),
            "purpose": operational("purpose", "the kind of mail (`ticket_reply`)"),
        },
        "mail_sent": {"kind": operational("kind", _MAIL_KINDS)},
        "mail_failed": {
            "kind": operational("kind", _MAIL_KINDS),
            "outcome": operational("outcome", "`permanent`, `temporary` or `unrecorded`"),
        },
    },
)
