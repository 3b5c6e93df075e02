"""An objection applied again, as a restored accounts service does with retention's log, records
nothing twice and never undoes a consent the contact gave after it."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from kernel.commands import load_command
from kernel.stores import open_store
from services.accounts import handlers, privacy
from services.accounts.commands import CreateContactV1, SetConsentV1, SignUpV1
from services.accounts.events import REGISTRY
from services.accounts.projections import PROJECTIONS


def test_an_objection_applied_again_changes_nothing_and_keeps_a_later_consent(world):
    store = open_store(
        world, "accounts", REGISTRY, PROJECTIONS, Path("services/accounts/migrations")
    )
    with store.unit_of_work() as uow:
        handlers.ensure_first_policy(uow, world)
    with store.unit_of_work() as uow:
        tenant = handlers.sign_up(
            load_command(
                SignUpV1,
                {
                    "company": "Acme",
                    "region": "uk",
                    "admin": {"name": "Ada", "email": "ada@example.com"},
                    "age_confirmed": True,
                    "accept_policy_version": world.policy_version,
                },
            ),
            uow,
            world,
        )["tenant"]["id"]
    with store.unit_of_work() as uow:
        contact = handlers.create_contact(
            uow, tenant, load_command(CreateContactV1, {"name": "Oz", "email": "oz@example.com"})
        )["id"]

    def consent(marketing: bool, source: str) -> None:
        with store.unit_of_work() as uow:
            command = load_command(SetConsentV1, {"marketing": marketing, "source": source})
            handlers.set_consent(uow, tenant, contact, command)

    def history() -> list[tuple[bool, str]]:
        with store.unit_of_work() as uow:
            found = handlers.get_consent(uow, tenant, contact)["history"]
        return [(c["marketing"], c["source"]) for c in found]

    def object_(request_id: uuid.UUID, issued_at: dt.datetime) -> str:
        with store.unit_of_work("accounts") as uow:
            return privacy.handlers_for(store.cipher)["object_to_marketing"](
                uow,
                {
                    "request_id": request_id,
                    "command": "object_to_marketing",
                    "tenant_id": uuid.UUID(tenant),
                    "subject_id": uuid.UUID(contact),
                    "subject_kind": "contact",
                    "issued_at": issued_at,
                },
            )["detail"]

    consent(True, "newsletter form")
    objection, sent = uuid.uuid4(), dt.datetime.now(dt.UTC)
    assert object_(objection, sent) == "marketing consent off, the objection on record"
    assert history() == [(True, "newsletter form"), (False, "objection")]

    assert object_(objection, sent) == "the objection is on record already"
    consent(True, "re-subscribed")
    assert object_(objection, sent) == "the objection is on record already"
    assert history() == [(True, "newsletter form"), (False, "objection"), (True, "re-subscribed")]

    # An objection applied before requests were marked is known by its opt-out, recorded after
    # the command was sent; a new one is applied.
    assert object_(uuid.uuid4(), sent - dt.timedelta(seconds=1)) == (
        "the objection is on record already"
    )
    assert object_(uuid.uuid4(), dt.datetime.now(dt.UTC)) == (
        "marketing consent off, the objection on record"
    )
    assert history()[-1] == (False, "objection")
