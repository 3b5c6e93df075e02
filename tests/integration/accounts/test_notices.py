"""Notices to a tenant's admins (services.accounts.notices) against the real database and
keystore, sent through the real sender to a real SMTP sink: one per active admin of the tenant,
sealed under that admin's key, queued once however often it is asked for, gone with the admin's
erasure and with the tenant's destruction."""

from __future__ import annotations

import dataclasses
import email.policy
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


def sign_up(
    store: EventSourcedStore, settings: Any, company: str, version: str | None = None
) -> dict[str, Any]:
    """A tenant with two admins, an agent, and a deactivated admin; their ids by role."""
    with store.unit_of_work() as uow:
        signed = handlers.sign_up(
            {
                "company": company,
                "region": "uk",
                "admin": {"name": f"{company} Admin", "email": f"first@{company}.example"},
                "age_confirmed": True,
                "accept_policy_version": version or settings.policy_version,
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


# --- a new policy version -----------------------------------------------------------------


def publish(store: EventSourcedStore, version: str) -> None:
    with store.unit_of_work("operator") as uow:
        handlers.publish_policy(uow, {"version": version})


def accept(store: EventSourcedStore, tenant_id: str, agent_id: str, version: str) -> None:
    with store.unit_of_work(agent_id) as uow:
        handlers.accept_policy(
            uow, {"tenant_id": tenant_id, "agent_id": agent_id}, {"version": version}
        )


def work_page(store: EventSourcedStore, mailer: Mailer, page: int) -> int | None:
    with store.unit_of_work("accounts") as uow:
        return notices.work_policy_notices(uow, mailer, "https://desk.example.test/console", page)


def work_all(store: EventSourcedStore, mailer: Mailer, page: int = 2) -> int:
    pages = 0
    while work_page(store, mailer, page):
        pages += 1
    return pages


def policy_mails(store: EventSourcedStore) -> list[tuple[str, str]]:
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT recipient_id::text, message_id FROM mail_outbox WHERE kind = 'policy_version'"
            " ORDER BY recipient_id"
        )
        return cur.fetchall()


def job(store: EventSourcedStore, version: str) -> tuple:
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT status, mailed, after_agent FROM policy_notice_jobs WHERE version = %s",
            (version,),
        )
        return cur.fetchone()


def test_a_new_policy_version_mails_each_agent_who_has_not_accepted_it_once(
    accounts: EventSourcedStore, world, mailer: Mailer
):
    tenants = [sign_up(accounts, world, name) for name in ("alder", "birch", "cedar")]
    assert work_page(accounts, mailer, 2) is None  # the first version mails no one
    publish(accounts, "2027-01")
    first = tenants[0]
    accept(accounts, first["tenant_id"], first["second"], "2027-01")
    later = sign_up(accounts, world, "dogwood", "2027-01")  # signed up after: not this mailing's

    # Pages of 2 over 9 owed agents and 3 passed over (accepted, deactivated): many pages.
    assert work_all(accounts, mailer) >= 5
    owed = sorted(
        t[role]
        for t in tenants
        for role in ("first", "second", "agent")
        if t[role] != first["second"]
    )
    mails = policy_mails(accounts)
    assert [recipient for recipient, _ in mails] == owed
    assert all(m.startswith("<policy_version.") for _, m in mails)
    assert not any(later[role] == r for r, _ in mails for role in ("first", "second", "agent"))
    assert job(accounts, "2027-01") == ("done", 8, None)
    # Done: nothing more to work, and a mailing started again queues nothing twice.
    assert work_page(accounts, mailer, 2) is None
    with accounts.db.transaction() as cur:
        cur.execute(
            "UPDATE policy_notice_jobs SET status = 'running', finished_at = NULL"
            " WHERE version = '2027-01'"
        )
    work_all(accounts, mailer)
    assert policy_mails(accounts) == mails


def test_a_mailing_cut_short_by_a_crash_resumes_and_neither_loses_nor_repeats_a_mail(
    accounts: EventSourcedStore, world, mailer: Mailer
):
    tenants = [sign_up(accounts, world, name) for name in ("elm", "fir")]
    publish(accounts, "2027-02")
    assert work_page(accounts, mailer, 2) == 2
    mailed_before = policy_mails(accounts)
    # A page whose transaction never commits (the process died in it): nothing of it stays.
    with pytest.raises(RuntimeError), accounts.unit_of_work("accounts") as uow:
        assert notices.work_policy_notices(uow, mailer, "https://c.example.test", 2) == 2
        raise RuntimeError("killed mid-page")
    assert policy_mails(accounts) == mailed_before
    work_all(accounts, mailer)
    owed = sorted(t[role] for t in tenants for role in ("first", "second", "agent"))
    assert [recipient for recipient, _ in policy_mails(accounts)] == owed


def test_a_newer_version_supersedes_a_mailing_under_way(
    accounts: EventSourcedStore, world, mailer: Mailer
):
    sign_up(accounts, world, "gum")
    publish(accounts, "2027-03")
    assert work_page(accounts, mailer, 2) == 2  # two of the four agents, by id
    [status, mailed, after] = job(accounts, "2027-03")
    assert status == "running" and after is not None and mailed in (1, 2)
    publish(accounts, "2027-04")
    assert job(accounts, "2027-03") == ("superseded", mailed, None)
    work_all(accounts, mailer)
    assert job(accounts, "2027-04") == ("done", 3, None)  # the three active agents
    assert len(policy_mails(accounts)) == mailed + 3  # no more of 2027-03


def test_the_policy_status_says_pending_until_the_agent_accepts(accounts: EventSourcedStore, world):
    tenant = sign_up(accounts, world, "hazel")
    with accounts.unit_of_work() as uow:
        admin = handlers.policy_status(uow, tenant["tenant_id"], tenant["first"])
        agent = handlers.policy_status(uow, tenant["tenant_id"], tenant["agent"])
    assert admin == {"policy_version": world.policy_version, "policy_acceptance_pending": False}
    assert agent["policy_acceptance_pending"] is True
    publish(accounts, "2027-05")
    with accounts.unit_of_work() as uow:
        assert handlers.policy_status(uow, tenant["tenant_id"], tenant["first"]) == {
            "policy_version": "2027-05",
            "policy_acceptance_pending": True,
        }
    accept(accounts, tenant["tenant_id"], tenant["first"], "2027-05")
    with accounts.unit_of_work() as uow:
        status = handlers.policy_status(uow, tenant["tenant_id"], tenant["first"])
    assert status["policy_acceptance_pending"] is False


# --- privacy requests' updates ------------------------------------------------------------


def opened_mails(store: EventSourcedStore, tenant_id: str) -> list[bytes]:
    assert store.cipher is not None
    with store.db.transaction() as cur:
        cur.execute(
            "SELECT id, key_subject_id, sealed FROM mail_outbox WHERE tenant_id = %s",
            (tenant_id,),
        )
        found = cur.fetchall()
    texts = []
    for mail_id, key_subject, blob in found:
        opened = open_mail(store.cipher.keystore, uuid.UUID(tenant_id), key_subject, mail_id, blob)
        assert opened is not None
        texts.append(opened[2])
    return texts


@pytest.mark.parametrize(
    ("event_type", "payload", "state"),
    [
        (
            "privacy_request_awaiting_approval",
            {"type": "erasure", "due_at": "2027-01-31T12:00:00+00:00"},
            "awaiting_approval",
        ),
        ("privacy_request_completed", {"type": "erasure", "subject_kind": "contact"}, "completed"),
        (
            "privacy_request_due_soon",
            {"type": "erasure", "status": "pending", "due_at": "2027-01-31T12:00:00+00:00"},
            "due_soon",
        ),
        ("privacy_request_overdue", {"type": "erasure"}, "failed"),
    ],
)
def test_a_privacy_request_update_mails_the_tenants_admins_once_by_id_type_and_state(
    accounts: EventSourcedStore, world, mailer: Mailer, event_type: str, payload: dict, state: str
):
    tenant = sign_up(accounts, world, "ivy")
    other = sign_up(accounts, world, "juniper")
    request, subject = uuid.uuid4(), uuid.uuid4()
    full = {
        **payload,
        "request_id": str(request),
        "tenant_id": tenant["tenant_id"],
        **({"subject_id": str(subject)} if "subject_kind" in payload else {}),
    }
    for _ in range(2):  # the same state told twice (a second event, a replay)
        with accounts.unit_of_work("accounts") as uow:
            notices.privacy_request_update(
                uow, mailer, "https://desk.example.test/console", event_type, full
            )
    rows = outbox_rows(accounts, tenant["tenant_id"])
    assert [row[1] for row in rows] == sorted([tenant["first"], tenant["second"]])
    assert {row[3] for row in rows} == {f"privacy_request_{state}"}
    assert outbox_rows(accounts, other["tenant_id"]) == []
    for data in opened_mails(accounts, tenant["tenant_id"]):
        mail = email.message_from_bytes(data, policy=email.policy.default)
        text = mail.get_content().replace("\r\n", "\n")
        assert str(request) in str(mail["Subject"]) and "erasure" in str(mail["Subject"])
        assert f"Type: erasure\nState: {state}\n" in text
        assert "https://desk.example.test/console#privacy" in text
        assert str(subject) not in data.decode()  # whom it concerns is never said
        assert str(mail["Auto-Submitted"]) == "auto-generated"
