"""Notices to a tenant's admins (services.accounts.notices) against the real database and
keystore, sent through the real sender to a real SMTP sink: one per active admin of the tenant,
sealed under that admin's key, queued once however often it is asked for, gone with the admin's
erasure and with the tenant's destruction."""

from __future__ import annotations

import dataclasses
import email.utils
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kernel.mail import sink
from kernel.mail.message import domain_of
from kernel.mail.outbox import Mailer, open_mail
from kernel.mail.sender import MailSender
from kernel.uow import EventSourcedStore
from services.accounts import handlers, notices, privacy

SENDER = "Ledgerdesk <notices@desk.example.test>"
KIND = "privacy_request_completed"


@pytest.fixture
def mailer(accounts: EventSourcedStore) -> Mailer:
    assert accounts.cipher is not None
    return Mailer(accounts.cipher.keystore, SENDER, domain_of(SENDER))


@pytest.fixture
def smtp() -> Iterator[Any]:
    with sink.running() as controller:
        yield controller


def sign_up(store: EventSourcedStore, settings: Any, company: str) -> dict[str, Any]:
    """A tenant with two admins, an agent, and a deactivated admin; their ids by role."""
    with store.unit_of_work() as uow:
        signed = handlers.sign_up(
            {
                "company": company,
                "region": "uk",
                "admin": {"name": f"{company} Admin", "email": f"first@{company}.example"},
                "age_confirmed": True,
                "accept_policy_version": settings.policy_version,
            },
            uow,
            settings,
        )
    tenant_id = signed["tenant"]["id"]
    actor = {
        "tenant_id": tenant_id,
        "agent_id": signed["agent"]["id"],
        "key_id": signed["credential"]["key_id"],
    }
    people = {"first": signed["agent"]["id"]}
    for name, role in (("second", "admin"), ("agent", "agent"), ("gone", "admin")):
        with store.unit_of_work() as uow:
            person = handlers.create_agent(
                uow,
                actor,
                {"name": f"{name} {company}", "email": f"{name}@{company}.example", "role": role},
                settings,
            )
        people[name] = person["id"]
    with store.unit_of_work() as uow:
        handlers.deactivate_agent(uow, tenant_id, people["gone"])
    return {"tenant_id": tenant_id, **people}


def outbox_rows(store: EventSourcedStore, tenant_id: str) -> list[tuple]:
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT id, recipient_id::text, key_subject_id::text, kind, reference_id,"
            " message_id, status FROM mail_outbox WHERE tenant_id = %s ORDER BY recipient_id",
            (tenant_id,),
        )
        return cur.fetchall()


def notify(store: EventSourcedStore, mailer: Mailer, tenant_id: str, request: uuid.UUID) -> list:
    with store.unit_of_work("accounts") as uow:
        return notices.mail_admins(
            uow,
            mailer,
            tenant_id,
            KIND,
            f"Privacy request {request} completed",
            f"The erasure request {request} is completed.",
            reference_id=request,
        )


def test_each_active_admin_of_the_tenant_gets_one_notice_sealed_under_their_key(
    accounts: EventSourcedStore, world, mailer: Mailer
):
    tenant = sign_up(accounts, world, "finch")
    other = sign_up(accounts, world, "lark")
    request = uuid.uuid4()

    queued = notify(accounts, mailer, tenant["tenant_id"], request)

    rows = outbox_rows(accounts, tenant["tenant_id"])
    assert sorted(row[0] for row in rows) == sorted(queued) and len(queued) == 2
    admins = sorted([tenant["first"], tenant["second"]])
    assert [row[1] for row in rows] == admins  # not the agent, not the deactivated admin
    assert [row[2] for row in rows] == admins  # each under the admin's own key
    assert {row[3] for row in rows} == {KIND} and {row[4] for row in rows} == {request}
    assert [row[5] for row in rows] == [
        f"<{KIND}.{request}.{admin}@desk.example.test>" for admin in admins
    ]
    assert outbox_rows(accounts, other["tenant_id"]) == []

    assert accounts.cipher is not None
    with accounts.db.transaction() as cur:
        cur.execute(
            "SELECT id, key_subject_id, sealed FROM mail_outbox WHERE id = %s", (queued[0],)
        )
        mail_id, key_subject, blob = cur.fetchone()
    opened = open_mail(
        accounts.cipher.keystore, uuid.UUID(tenant["tenant_id"]), key_subject, mail_id, blob
    )
    assert opened is not None
    _, recipients, data = opened
    assert recipients[0].endswith("@finch.example")
    assert b"Auto-Submitted: auto-generated" in data
    assert b"List-Unsubscribe" not in data
    # Nothing but the sealed column says whom or what: no address in any other column.
    with accounts.db.transaction() as cur:
        cur.execute("SELECT (t - 'sealed')::text FROM (SELECT to_jsonb(m) t FROM mail_outbox m) x")
        assert not any("@finch.example" in text for (text,) in cur.fetchall())


def test_asking_again_for_the_same_notice_queues_nothing(
    accounts: EventSourcedStore, world, mailer: Mailer
):
    tenant = sign_up(accounts, world, "wren")
    request = uuid.uuid4()
    assert len(notify(accounts, mailer, tenant["tenant_id"], request)) == 2
    assert notify(accounts, mailer, tenant["tenant_id"], request) == []  # a redelivery
    assert len(outbox_rows(accounts, tenant["tenant_id"])) == 2
    # Another request, or another kind about the same one, is another notice.
    assert len(notify(accounts, mailer, tenant["tenant_id"], uuid.uuid4())) == 2
    with accounts.unit_of_work("accounts") as uow:
        other_kind = notices.mail_admins(
            uow, mailer, tenant["tenant_id"], "privacy_request_failed", "s", "b", request
        )
    assert len(other_kind) == 2


def test_a_kind_that_cannot_be_part_of_a_message_id_is_refused(
    accounts: EventSourcedStore, world, mailer: Mailer
):
    tenant = sign_up(accounts, world, "heron")
    for kind in ("Privacy Update", "a@b", "", "x" * 80):
        with pytest.raises(ValueError), accounts.unit_of_work("accounts") as uow:
            notices.mail_admins(uow, mailer, tenant["tenant_id"], kind, "s", "b")
    assert outbox_rows(accounts, tenant["tenant_id"]) == []


def test_an_erased_admins_notice_is_deleted_and_the_other_admins_is_sent(
    accounts: EventSourcedStore, world, mailer: Mailer, smtp: Any
):
    tenant = sign_up(accounts, world, "robin")
    request = uuid.uuid4()
    notify(accounts, mailer, tenant["tenant_id"], request)
    erase = privacy.handlers_for(accounts.cipher)["erase_subject"]
    with accounts.unit_of_work("accounts") as uow:
        done = erase(uow, {"tenant_id": tenant["tenant_id"], "subject_id": tenant["first"]})
    assert "1 mails deleted" in done["detail"]
    assert [row[1] for row in outbox_rows(accounts, tenant["tenant_id"])] == [tenant["second"]]

    assert accounts.cipher is not None
    settings = dataclasses.replace(world, smtp_host="127.0.0.1", smtp_port=smtp.port)
    sender = MailSender.of("accounts", accounts.db, accounts.cipher.keystore, settings)
    assert sender.run_once() == 1
    [mail] = smtp.handler.messages()
    assert email.utils.parseaddr(str(mail["To"]))[1] == "second@robin.example"
    assert str(mail["Message-ID"]) == f"<{KIND}.{request}.{tenant['second']}@desk.example.test>"
    assert str(mail["Auto-Submitted"]) == "auto-generated"
    assert str(request) in mail.get_content()
    [(status,)] = [(row[6],) for row in outbox_rows(accounts, tenant["tenant_id"])]
    assert status == "sent"
    # The ledger learns that it went, to whom by id, never the address.
    with accounts.db.transaction() as cur:
        cur.execute(
            "SELECT body::json->'payload' FROM outbox WHERE routing_key = 'accounts.mail_sent'"
        )
        [(payload,)] = cur.fetchall()
    assert payload["recipient_id"] == tenant["second"] and payload["kind"] == KIND
    assert "robin.example" not in str(payload)
    # The erased admin is owed nothing more: a new notice goes to the other admin only.
    assert len(notify(accounts, mailer, tenant["tenant_id"], uuid.uuid4())) == 1


def test_a_single_agent_gets_a_notice_unless_deactivated(
    accounts: EventSourcedStore, world, mailer: Mailer
):
    tenant = sign_up(accounts, world, "swift")
    reference = uuid.uuid4()
    with accounts.unit_of_work("accounts") as uow:
        sent = notices.mail_agent(
            uow, mailer, tenant["tenant_id"], tenant["agent"], "policy_version", "s", "b", reference
        )
        again = notices.mail_agent(
            uow, mailer, tenant["tenant_id"], tenant["agent"], "policy_version", "s", "b", reference
        )
        gone = notices.mail_agent(
            uow, mailer, tenant["tenant_id"], tenant["gone"], "policy_version", "s", "b", reference
        )
        elsewhere = notices.mail_agent(
            uow, mailer, str(uuid.uuid4()), tenant["agent"], "policy_version", "s", "b", reference
        )
    assert sent is not None and again is None and gone is None and elsewhere is None
    assert [row[1] for row in outbox_rows(accounts, tenant["tenant_id"])] == [tenant["agent"]]


def test_the_tenants_destruction_deletes_its_notices(
    accounts: EventSourcedStore, world, mailer: Mailer
):
    doomed = sign_up(accounts, world, "doomed")
    kept = sign_up(accounts, world, "kept")
    notify(accounts, mailer, doomed["tenant_id"], uuid.uuid4())
    notify(accounts, mailer, kept["tenant_id"], uuid.uuid4())
    destroy = privacy.handlers_for(accounts.cipher)["destroy_tenant"]
    with accounts.unit_of_work("accounts") as uow:
        destroy(uow, {"tenant_id": doomed["tenant_id"], "request_id": str(uuid.uuid4())})
    assert outbox_rows(accounts, doomed["tenant_id"]) == []
    assert len(outbox_rows(accounts, kept["tenant_id"])) == 2
