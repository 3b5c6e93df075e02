"""The ledger's checkpoints as signed notes, under a published key list with validity periods,
against a real PostgreSQL: new checkpoints are stored as notes, rows signed before notes (no
note) still verify, a key rotation leaves old checkpoints verifying on the server and offline,
a key outside its period vouches for nothing, the export the command line writes verifies
offline, and the audit service refuses to start with a signing key that is not published or
not valid now.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.signed_note import EPOCH, PublicKey, open_checkpoint
from kernel.signing import Signer, checkpoint_message
from kernel.stores import prepare_databases
from kernel.testing import world_env
from services import platform
from services.audit import cli, offline_verify
from services.audit.ledger import Ledger, open_ledger
from tests.integration.audit.test_ledger import MIGRATIONS, record_all, tamper, things

OLD = Signer(bytes(range(40, 72)))
NEW = Signer(bytes(range(80, 112)))
ORIGIN = "audit.ledgerdesk.test/keys"


def ledger_with(world, signer: Signer, keys: tuple[PublicKey, ...]) -> Ledger:
    base = open_ledger(world)
    return Ledger(base.db, base.cipher, signer, world.day_seconds, origin=ORIGIN, keys=keys)


@pytest.fixture
def prepared(world):
    prepare_databases(world, "audit", MIGRATIONS)
    return world


def offline(ledger: Ledger, keys: tuple[PublicKey, ...]) -> dict:
    """The ledger exported and checked by the offline verifier, in memory."""
    text = "".join(json.dumps(record) + "\n" for record in ledger.export())
    return offline_verify.verify(offline_verify.read_export(io.StringIO(text)), ORIGIN, keys)


def test_a_new_checkpoint_is_stored_as_a_signed_note_that_opens_with_the_public_key(prepared):
    keys = (PublicKey(OLD.public_key),)
    ledger = ledger_with(prepared, OLD, keys)
    record_all(ledger, things(5))
    view = ledger.checkpoint()
    assert view is not None
    checkpoint, key = open_checkpoint(view["note"], ORIGIN, keys)
    assert (checkpoint.tree_size, checkpoint.root_hash.hex(), checkpoint.signed_at) == (
        5,
        view["root_hash"],
        view["signed_at"],
    )
    assert key == keys[0]
    with ledger.db.transaction() as cur:
        cur.execute("SELECT note FROM checkpoints WHERE tree_size = 5")
        assert cur.fetchone()[0] == view["note"]
    assert ledger.proof(None, 3)["checkpoint"]["note"] == view["note"]


def test_checkpoints_signed_before_notes_still_verify_and_a_bad_one_still_fails(prepared):
    keys = (PublicKey(OLD.public_key),)
    ledger = ledger_with(prepared, OLD, keys)
    record_all(ledger, things(4))
    ledger.checkpoint()
    record_all(ledger, things(3, dt.datetime(2026, 4, 1, tzinfo=dt.UTC)))
    ledger.checkpoint()
    # As an upgraded ledger holds them: rows from before the migration have no note.
    tamper(ledger, lambda cur: cur.execute("UPDATE checkpoints SET note = NULL"))
    assert ledger.verify()["ok"] is True
    assert offline(ledger, keys)["ok"] is True

    tamper(
        ledger,
        lambda cur: cur.execute(
            "UPDATE checkpoints SET root_hash = %s WHERE tree_size = 7", (bytes(32),)
        ),
    )
    assert (ledger.verify()["ok"], ledger.verify()["first_bad_seq"]) == (False, 5)
    result = offline(ledger, keys)
    assert (result["ok"], result["first_bad_seq"]) == (False, 5)


def two_checkpoints(prepared) -> tuple[Ledger, tuple[PublicKey, ...], list[dict]]:
    keys = (PublicKey(OLD.public_key),)
    ledger = ledger_with(prepared, OLD, keys)
    record_all(ledger, things(4))
    first = ledger.checkpoint()
    record_all(ledger, things(3, dt.datetime(2026, 4, 1, tzinfo=dt.UTC)))
    second = ledger.checkpoint()
    assert first is not None and second is not None
    assert ledger.verify()["ok"] is True
    return ledger, keys, [first, second]


def test_a_checkpoint_without_its_note_after_one_with_a_note_is_refused(prepared):
    # Its v1 signature holds, but a v1 message names no log: another log's would too.
    ledger, keys, _ = two_checkpoints(prepared)
    tamper(
        ledger, lambda cur: cur.execute("UPDATE checkpoints SET note = NULL WHERE tree_size = 7")
    )
    result = ledger.verify()
    assert (result["ok"], result["first_bad_seq"]) == (False, 5)
    result = offline(ledger, keys)
    assert (result["ok"], result["first_bad_seq"], result["bad_checkpoint"]["tree_size"]) == (
        False,
        5,
        7,
    )


def test_a_larger_tree_signed_before_a_smaller_one_is_refused(prepared):
    # As a leaked retired key would sign: a larger tree, dated back inside the key's period.
    ledger, keys, (first, second) = two_checkpoints(prepared)
    backdated = (dt.datetime.fromisoformat(first["signed_at"]) - dt.timedelta(days=1)).isoformat()
    root = bytes.fromhex(second["root_hash"])

    def resign(cur) -> None:
        cur.execute(
            "UPDATE checkpoints SET signed_at = %s, signature = %s, note = %s WHERE tree_size = 7",
            (
                backdated,
                OLD.sign(checkpoint_message(7, root, backdated)),
                OLD.sign_checkpoint(ORIGIN, 7, root, backdated),
            ),
        )

    tamper(ledger, resign)
    # Each signature holds on its own; only the order tells.
    assert ledger.signature_holds(
        7,
        root,
        backdated,
        OLD.public_key_b64,
        OLD.sign(checkpoint_message(7, root, backdated)),
        OLD.sign_checkpoint(ORIGIN, 7, root, backdated),
    )
    for from_zero in (True, False):
        result = ledger.verify(from_zero=from_zero)
        assert (result["ok"], result["first_bad_seq"]) == (False, 5), from_zero
    result = offline(ledger, keys)
    assert (result["ok"], result["first_bad_seq"]) == (False, 5)
    assert "before the checkpoint of the smaller tree size 4" in result["bad_checkpoint"]["reason"]


def test_a_resumed_walk_keeps_the_order_from_the_checkpoint_it_ended_at(prepared):
    ledger, keys, (first, _) = two_checkpoints(prepared)
    assert ledger.verify(from_zero=False)["verified_size"] == 7
    record_all(ledger, things(2, dt.datetime(2026, 5, 1, tzinfo=dt.UTC)))
    ledger.checkpoint()
    # The new checkpoint, re-signed without a note, on a walk that resumes at 7.
    tamper(
        ledger, lambda cur: cur.execute("UPDATE checkpoints SET note = NULL WHERE tree_size = 9")
    )
    result = ledger.verify(from_zero=False)
    assert (result["ok"], result["first_bad_seq"]) == (False, 8)


def test_after_a_rotation_old_and_new_checkpoints_verify_and_a_key_out_of_its_period_does_not(
    prepared,
):
    rotated_at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    # The new key is published ahead and both are valid for the hour of the change-over.
    keys = (
        PublicKey(OLD.public_key, EPOCH, rotated_at),
        PublicKey(NEW.public_key, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1), None),
    )
    old = ledger_with(prepared, OLD, keys)
    record_all(old, things(4))
    old.checkpoint()
    new = ledger_with(prepared, NEW, keys)
    record_all(new, things(3, dt.datetime(2026, 4, 1, tzinfo=dt.UTC)))
    new.checkpoint()
    with new.db.transaction() as cur:
        cur.execute("SELECT public_key FROM checkpoints ORDER BY tree_size")
        assert [r[0] for r in cur.fetchall()] == [OLD.public_key_b64, NEW.public_key_b64]

    for ledger in (old, new):
        result = ledger.verify()
        assert (result["ok"], result["checkpoints"]) == (True, 2), result
    assert offline(new, keys)["verified_until"] == 7

    # Were the old key's period over before it signed, its checkpoint would vouch for nothing.
    ended = (PublicKey(OLD.public_key, EPOCH, EPOCH + dt.timedelta(days=1)), keys[1])
    audited = ledger_with(prepared, NEW, ended)
    assert (audited.verify()["ok"], audited.verify()["first_bad_seq"]) == (False, 1)
    result = offline(new, ended)
    assert (result["first_bad_seq"], result["bad_checkpoint"]["tree_size"]) == (1, 4)
    assert "outside the validity period" in result["bad_checkpoint"]["reason"]


def test_a_key_past_its_period_does_not_sign(prepared):
    expired = (PublicKey(OLD.public_key, EPOCH, EPOCH + dt.timedelta(days=1)),)
    ledger = ledger_with(prepared, OLD, expired)
    record_all(ledger, things(2))
    with pytest.raises(Exception, match="not valid now"):
        ledger.checkpoint()
    with ledger.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM checkpoints")
        assert cur.fetchone()[0] == 0


def test_the_cli_export_verifies_offline_in_a_process_without_settings(
    prepared, monkeypatch, tmp_path
):
    for name, value in world_env(prepared).items():
        if name.startswith("LEDGERDESK_"):
            monkeypatch.setenv(name, value)
    ledger = open_ledger(prepared)
    record_all(ledger, things(6))
    ledger.checkpoint()
    # Entries no checkpoint covers yet: the command signs one over them before it exports.
    record_all(ledger, things(3, dt.datetime(2026, 4, 1, tzinfo=dt.UTC)))
    out = io.StringIO()
    assert cli.main(["export", str(tmp_path)], out=out) == 0
    summary = json.loads(out.getvalue())
    assert (summary["entries"], summary["checkpoints"]) == (9, 2)
    assert summary["covered_until"] == 9
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps(
            {
                "origin": prepared.audit_origin,
                "keys": [
                    {
                        "public_key": ledger.signer.public_key_b64,
                        "valid_from": EPOCH.isoformat(),
                        "valid_until": None,
                    }
                ],
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "services.audit.offline_verify", str(tmp_path), "--keys", str(keys)],
        cwd=Path(__file__).resolve().parents[3],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (json.loads(done.stdout)["verified_until"], json.loads(done.stdout)["not_covered"]) == (
        9,
        0,
    )


def test_an_export_stops_at_the_newest_checkpoint_leaving_out_entries_no_signature_covers(
    prepared,
):
    keys = (PublicKey(OLD.public_key),)
    ledger = ledger_with(prepared, OLD, keys)
    record_all(ledger, things(6))
    ledger.checkpoint()
    record_all(ledger, things(3, dt.datetime(2026, 4, 1, tzinfo=dt.UTC)))
    header, *rest = ledger.export()
    assert [r["seq"] for r in rest if r["type"] == "entry"] == [1, 2, 3, 4, 5, 6]
    assert (header["entries"], header["tree_size"]) == (6, 6)
    result = offline(ledger, keys)
    assert (result["ok"], result["verified_until"], result["not_covered"]) == (True, 6, 0)
    # With nothing signed, nothing is exported, and the verifier says it covers nothing.
    tamper(ledger, lambda cur: cur.execute("DELETE FROM checkpoints"))
    header, *rest = ledger.export()
    assert (header["entries"], rest) == (0, [])
    assert offline(ledger, keys)["ok"] is False


@pytest.mark.parametrize(
    "keys, message",
    [
        (
            [
                {
                    "public_key": NEW.public_key_b64,
                    "valid_from": "2026-01-01T00:00:00Z",
                    "valid_until": None,
                }
            ],
            "not in LEDGERDESK_AUDIT_PUBLIC_KEYS",
        ),
        (
            [
                {
                    "public_key": None,
                    "valid_from": "2000-01-01T00:00:00Z",
                    "valid_until": "2001-01-01T00:00:00Z",
                }
            ],
            "not valid now",
        ),
    ],
)
def test_the_audit_service_refuses_to_start_with_a_signing_key_not_published_or_not_valid(
    prepared, tmp_path, keys, message
):
    env = world_env(prepared)
    seed_key = open_ledger(prepared).signer.public_key_b64
    for key in keys:
        key["public_key"] = key["public_key"] or seed_key
    env["LEDGERDESK_AUDIT_PUBLIC_KEYS"] = json.dumps(keys)
    platform.prepare(prepared)
    # Services read retention's log of forgetting as they start: retention runs too, so the
    # refusal cannot hide behind that wait.
    processes = platform.start_processes(
        env, gateway_processes=0, only=("retention", "audit"), log_dir=tmp_path
    )
    try:
        processes["audit"].wait(timeout=120)
    finally:
        platform.stop_processes(processes)
    assert processes["audit"].returncode != 0
    assert message in (tmp_path / "audit.log").read_text()
