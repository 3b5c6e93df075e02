"""Who may decide what another admin filed: the rules alone, on the caller as accounts
describes it (tests/e2e/test_four_eyes.py drives them through the gateway)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from kernel.errors import Conflict, Forbidden
from services.accounts.events import API_KEY_ISSUED
from services.retention.four_eyes import check_four_eyes

FILED_AT = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
FILER, MINTER, OTHER = (str(uuid.uuid4()) for _ in range(3))


def caller(
    agent_id: str,
    issuer: str | None = None,
    since: dt.datetime | None = None,
    issued: dt.datetime | None = None,
) -> dict:
    return {
        "agent_id": agent_id,
        "key_id": str(uuid.uuid4()),
        "key_issuer_id": agent_id if issuer is None else issuer,
        "key_issued_at": (issued or FILED_AT - dt.timedelta(hours=1)).isoformat(),
        "admin_since": (since or FILED_AT - dt.timedelta(days=1)).isoformat(),
    }


def test_another_admin_from_before_the_filing_with_her_own_key_may_decide():
    check_four_eyes(caller(OTHER), FILER, FILER, FILED_AT, "a request")


def test_the_filer_cannot_decide_her_own_filing():
    with pytest.raises(Conflict, match="the admin who filed a request"):
        check_four_eyes(caller(FILER), FILER, FILER, FILED_AT, "a request")


@pytest.mark.parametrize(
    ("decider", "filed_key_issuer"),
    [
        (caller(OTHER, issuer=FILER), FILER),  # a key the filer minted for another admin
        (caller(MINTER), MINTER),  # filed with a key the decider minted for the filer
        (caller(OTHER, issuer=MINTER), MINTER),  # both through keys one admin minted
    ],
    ids=["filer-minted-the-deciding-key", "decider-minted-the-filing-key", "one-minter"],
)
def test_no_key_of_the_people_behind_the_filing_may_decide_it(decider, filed_key_issuer):
    with pytest.raises(Forbidden, match="issued"):
        check_four_eyes(decider, FILER, filed_key_issuer, FILED_AT, "a request")


def test_a_filing_of_an_older_release_has_only_its_filer_behind_it():
    check_four_eyes(caller(OTHER), FILER, None, FILED_AT, "a request")


@pytest.mark.parametrize("since", [FILED_AT, FILED_AT + dt.timedelta(seconds=1)])
def test_an_admin_since_the_filing_or_later_may_not_decide(since):
    with pytest.raises(Forbidden, match="already an admin when a policy change was filed"):
        check_four_eyes(caller(OTHER, since=since), FILER, FILER, FILED_AT, "a policy change")


@pytest.mark.parametrize("issued", [FILED_AT, FILED_AT + dt.timedelta(minutes=5)])
def test_a_key_issued_at_or_after_the_filing_may_not_decide(issued):
    # Whoever kept a copy of an agent's key could claim a fresh one with it just to approve.
    with pytest.raises(Forbidden, match="issued after a request was filed"):
        check_four_eyes(caller(OTHER, issued=issued), FILER, FILER, FILED_AT, "a request")
    older = {k: v for k, v in caller(OTHER).items() if k != "key_issued_at"}
    with pytest.raises(Forbidden, match="issued after"):
        check_four_eyes(older, FILER, FILER, FILED_AT, "a request")


def test_a_caller_not_an_admin_or_described_by_an_older_gateway_is_refused():
    not_admin = {**caller(OTHER), "admin_since": None}
    with pytest.raises(Forbidden, match="already an admin"):
        check_four_eyes(not_admin, FILER, FILER, FILED_AT, "a request")
    older = {k: v for k, v in caller(OTHER).items() if k not in ("key_issuer_id", "admin_since")}
    with pytest.raises(Forbidden, match="not known"):
        check_four_eyes(older, FILER, FILER, FILED_AT, "a request")


def test_a_key_issued_before_issuers_were_recorded_reads_as_issuer_unknown():
    payload = {"agent_id": OTHER, "key_id": str(uuid.uuid4()), "key_hash": "h"}
    upcast, version = API_KEY_ISSUED.upcast(payload, 1)
    assert version == 2 and upcast == {**payload, "issuer_id": None}
    assert API_KEY_ISSUED.withheld_fields == ("key_hash",)
