"""A policy version's mailing killed with SIGKILL mid-page, after the page's mails were queued
and before its position committed (``policy_notices.page_queued``), then run again: every agent
who owed an acceptance is owed exactly one mail, none lost and none queued twice, because a
page's mails and its position commit together (``services.accounts.notices``)."""

from __future__ import annotations

import collections
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import services.accounts
from kernel.stores import open_store
from kernel.testing import world_env
from services.accounts import handlers
from services.accounts.events import REGISTRY
from services.accounts.projections import PROJECTIONS

pytestmark = pytest.mark.reliability

MIGRATIONS = Path(services.accounts.__file__).parent / "migrations"
TENANTS = 4
PAGE = 3
CRASH_AT = 2  # the second page: the first committed, the second queued and lost

# The mailing alone, as a timer of an accounts process works it: page by page until done.
WORKER = f"""
from kernel.config import Settings
from kernel.mail.message import domain_of
from kernel.mail.outbox import Mailer
from kernel.stores import open_store
from services.accounts import notices
from services.accounts.events import REGISTRY
from services.accounts.projections import PROJECTIONS

settings = Settings.from_env(service="accounts")
store = open_store(settings, "accounts", REGISTRY, PROJECTIONS, prepare=False)
mailer = Mailer(store.cipher.keystore, settings.mail_from, domain_of(settings.mail_from))
while True:
    with store.unit_of_work("accounts") as uow:
        if not notices.work_policy_notices(uow, mailer, settings.console_url, page={PAGE}):
            break
"""


def run_worker(env: dict[str, str]) -> int:
    return subprocess.run(
        [sys.executable, "-c", WORKER], env=env, timeout=120, check=False
    ).returncode


def test_a_mailing_killed_mid_page_loses_and_repeats_nothing(world):
    store = open_store(world, "accounts", REGISTRY, PROJECTIONS, MIGRATIONS)
    with store.unit_of_work() as uow:
        handlers.ensure_first_policy(uow, world)
    agents = []
    for n in range(TENANTS):
        with store.unit_of_work() as uow:
            signed = handlers.sign_up(
                {
                    "company": f"Kite {n}",
                    "region": "uk",
                    "admin": {"name": f"Admin {n}", "email": f"admin{n}@kite.example"},
                    "age_confirmed": True,
                    "accept_policy_version": world.policy_version,
                },
                uow,
                world,
            )
        actor = {
            "tenant_id": signed["tenant"]["id"],
            "agent_id": signed["agent"]["id"],
            "key_id": signed["credential"]["key_id"],
        }
        with store.unit_of_work() as uow:
            agent = handlers.create_agent(
                uow,
                actor,
                {"name": f"Agent {n}", "email": f"agent{n}@kite.example", "role": "agent"},
                world,
            )
        agents += [signed["agent"]["id"], agent["id"]]
    version = f"2027-{uuid.uuid4().hex[:6]}"
    with store.unit_of_work("operator") as uow:
        handlers.publish_policy(uow, {"version": version})

    env = world_env(world)
    assert run_worker({**env, "LEDGERDESK_FAULTS": f"policy_notices.page_queued:{CRASH_AT}"}) == -9

    def state() -> tuple[collections.Counter, tuple]:
        with store.db.transaction() as cur:
            cur.execute("SELECT recipient_id::text FROM mail_outbox WHERE kind = 'policy_version'")
            mailed = collections.Counter(row[0] for row in cur.fetchall())
            cur.execute(
                "SELECT status, mailed FROM policy_notice_jobs WHERE version = %s", (version,)
            )
            return mailed, cur.fetchone()

    mailed, job = state()
    # The first page stands; the killed page's mails went with its transaction.
    assert sum(mailed.values()) == PAGE and job == ("running", PAGE)

    assert run_worker(env) == 0
    mailed, job = state()
    assert job == ("done", len(agents))
    assert sorted(mailed) == sorted(agents)  # nothing lost
    assert set(mailed.values()) == {1}  # nothing queued twice
