"""The offline verifier needs nothing but the export and the public keys: importing it loads no
settings, database driver, broker client or signing code that holds the seed."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kernel import signed_note
from services.audit import chain, merkle, offline_verify

ROOT = Path(__file__).resolve().parents[3]
FORBIDDEN = (
    "kernel.config",
    "kernel.signing",
    "kernel.db",
    "psycopg2",
    "nameko",
    "kombu",
    "services.audit.ledger",
)


def test_the_offline_verifier_imports_no_settings_database_or_seed():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; import services.audit.offline_verify;"
            " print(json.dumps(sorted(sys.modules)))",
        ],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "services.audit.offline_verify" in loaded
    assert [m for m in loaded if m.startswith(FORBIDDEN)] == []


# --- coverage and order: exports built here, signed with a key of the test's own ----------------
#
# A hash chain has no key: whoever holds the file can write entries that link. Each case is one
# a security review forged; each passed before the verifier demanded a signature over every entry.

ORIGIN = "ledgerdesk.example/audit"
PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(40, 72)))
PUBLIC = PRIVATE.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
KEYS = json.dumps(
    {
        "origin": ORIGIN,
        "keys": [
            {
                "public_key": base64.b64encode(PUBLIC).decode(),
                "valid_from": "2026-01-01T00:00:00+00:00",
                "valid_until": None,
            }
        ],
    }
)
HONEST = [json.dumps({"n": i}) for i in range(10)]
FORGED = [json.dumps({"type": "forged", "i": i}) for i in range(5)]
DAY_1, DAY_2, DAY_5 = (f"2026-12-0{d}T00:00:00+00:00" for d in (1, 2, 5))


def entries(contents: list[str]) -> list[dict[str, Any]]:
    prev, out = chain.GENESIS, []
    for seq, content in enumerate(contents, 1):
        hash_ = chain.entry_hash(prev, seq, content.encode())
        out.append(
            {
                "type": "entry",
                "seq": seq,
                "content": content,
                "prev_hash": prev.hex(),
                "hash": hash_.hex(),
            }
        )
        prev = hash_
    return out


def root(contents: list[str]) -> bytes:
    tree = merkle.CompactRange()
    for content in contents:
        tree.append(chain.leaf_hash(content.encode()))
    return tree.root()


def checkpoint(contents: list[str], signed_at: str = DAY_1) -> dict[str, Any]:
    text = signed_note.checkpoint_text(ORIGIN, len(contents), root(contents), signed_at)
    note = signed_note.sign_note(text, ORIGIN, PUBLIC, PRIVATE.sign)
    return {
        "type": "checkpoint",
        "tree_size": len(contents),
        "root_hash": root(contents).hex(),
        "note": note,
    }


def v1_checkpoint(contents: list[str], signed_at: str = DAY_1) -> dict[str, Any]:
    """As checkpoints signed before notes are exported: a v1 signature, no note."""
    message = signed_note.v1_checkpoint_message(len(contents), root(contents), signed_at)
    return {
        "type": "checkpoint",
        "tree_size": len(contents),
        "root_hash": root(contents).hex(),
        "signed_at": signed_at,
        "public_key": base64.b64encode(PUBLIC).decode(),
        "signature": base64.b64encode(PRIVATE.sign(message)).decode(),
        "note": None,
    }


def verify(tmp_path: Path, lines: list[dict[str, Any]], *options: str) -> tuple[int, dict]:
    path = tmp_path / "audit-export.jsonl"
    header = {"format": offline_verify.EXPORT_FORMAT}
    path.write_text("".join(json.dumps(line) + "\n" for line in [header, *lines]), "utf-8")
    out = io.StringIO()
    code = offline_verify.main([str(path), "--keys", KEYS, *options], out=out)
    return code, json.loads(out.getvalue())


def test_an_export_every_entry_of_which_a_checkpoint_signs_verifies(tmp_path):
    code, result = verify(tmp_path, [checkpoint(HONEST), *entries(HONEST)])
    assert (code, result["ok"], result["verified_until"], result["not_covered"]) == (0, True, 10, 0)


def test_entries_made_up_with_no_checkpoint_at_all_are_not_covered(tmp_path):
    code, result = verify(tmp_path, entries(FORGED))
    assert code == 1, result
    assert (result["ok"], result["not_covered"], result["first_bad_seq"]) == (False, 5, 1)
    assert "no checkpoint of tree size > 0" in result["refused"]


def test_a_tail_rewritten_after_the_newest_checkpoint_is_not_covered(tmp_path):
    rewritten = HONEST[:5] + [json.dumps({"rewritten": i}) for i in range(5)]
    lines = [checkpoint(HONEST[:5]), *entries(rewritten)]
    code, result = verify(tmp_path, lines)
    assert code == 1, result
    assert (result["not_covered"], result["first_bad_seq"]) == (5, 6)
    assert "5 entries after the newest checkpoint" in result["refused"]


def test_an_auditor_may_knowingly_accept_the_unsigned_tail_and_is_told_its_size(tmp_path, capsys):
    lines = [checkpoint(HONEST[:5]), *entries(HONEST)]
    code, result = verify(tmp_path, lines, "--allow-unsigned-tail")
    assert (code, result["ok"], result["verified_until"], result["not_covered"]) == (0, True, 5, 5)
    assert "5 entries after it NOT covered" in capsys.readouterr().err


def test_a_forged_entry_appended_after_the_head_checkpoint_is_not_covered(tmp_path):
    lines = [checkpoint(HONEST), *entries([*HONEST, '{"x":1}'])]
    code, result = verify(tmp_path, lines)
    assert code == 1, result
    assert (result["not_covered"], result["first_bad_seq"]) == (1, 11)


def test_a_checkpoint_of_size_0_covers_nothing(tmp_path):
    code, result = verify(tmp_path, [checkpoint([]), *entries(FORGED)])
    assert code == 1, result
    assert (result["verified_until"], result["not_covered"]) == (0, 5)
    assert "no checkpoint of tree size > 0" in result["refused"]
    # Not even when the auditor accepts an unsigned tail: nothing at all is signed.
    code, _ = verify(tmp_path, [checkpoint([]), *entries(FORGED)], "--allow-unsigned-tail")
    assert code == 1


def test_an_export_cut_short_with_its_later_checkpoint_is_caught_by_the_expected_size(tmp_path):
    truncated = [checkpoint(HONEST[:5]), *entries(HONEST[:5])]
    # Alone, the cut-short export is whole and signed: only a size known independently tells.
    assert verify(tmp_path, truncated)[0] == 0
    code, result = verify(tmp_path, truncated, "--expect-size", "10")
    assert (code, result["ok"], result["verified_until"]) == (1, False, 5)
    assert "fewer than the expected 10" in result["refused"]
    full = [checkpoint(HONEST[:5]), checkpoint(HONEST), *entries(HONEST)]
    assert verify(tmp_path, full, "--expect-size", "10")[0] == 0
    assert verify(tmp_path, full, "--expect-size", "7")[0] == 0


def test_the_expected_root_pins_the_tree_at_the_expected_size(tmp_path):
    full = [checkpoint(HONEST[:5]), checkpoint(HONEST), *entries(HONEST)]
    for size in (5, 7, 10):
        pinned = root(HONEST[:size]).hex()
        assert verify(tmp_path, full, "--expect-size", str(size), "--expect-root", pinned)[0] == 0
    other = root([json.dumps({"other": i}) for i in range(7)]).hex()
    code, result = verify(tmp_path, full, "--expect-size", "7", "--expect-root", other)
    assert (code, result["ok"]) == (1, False)
    assert "root at tree size 7 is not the expected one" in result["refused"]


def test_an_expected_root_without_a_size_or_malformed_cannot_run(tmp_path):
    path = tmp_path / "audit-export.jsonl"
    path.write_text(json.dumps({"format": offline_verify.EXPORT_FORMAT}) + "\n", "utf-8")
    for options in (
        ["--expect-root", "00" * 32],
        ["--expect-size", "0"],
        ["--expect-size", "3", "--expect-root", "abc"],
    ):
        with pytest.raises(SystemExit) as exited:
            offline_verify.main([str(path), "--keys", KEYS, *options], out=io.StringIO())
        assert exited.value.code == offline_verify.COULD_NOT_RUN


def test_a_checkpoint_without_a_note_after_one_with_a_note_is_refused(tmp_path):
    lines = [checkpoint(HONEST[:5]), v1_checkpoint(HONEST, DAY_2), *entries(HONEST)]
    code, result = verify(tmp_path, lines)
    assert code == 1, result
    assert (result["first_bad_seq"], result["bad_checkpoint"]["tree_size"]) == (6, 10)
    assert "no signed note" in result["bad_checkpoint"]["reason"]


def test_checkpoints_signed_before_notes_still_verify_before_the_first_note(tmp_path):
    lines = [v1_checkpoint(HONEST[:3]), checkpoint(HONEST, DAY_2), *entries(HONEST)]
    assert verify(tmp_path, lines)[0] == 0
    assert verify(tmp_path, [v1_checkpoint(HONEST), *entries(HONEST)])[0] == 0


def test_a_larger_tree_signed_earlier_than_a_smaller_one_is_refused(tmp_path):
    lines = [checkpoint(HONEST[:5], DAY_5), checkpoint(HONEST, DAY_2), *entries(HONEST)]
    code, result = verify(tmp_path, lines)
    assert code == 1, result
    assert (result["first_bad_seq"], result["bad_checkpoint"]["tree_size"]) == (6, 10)
    assert "before the checkpoint of the smaller tree size 5" in result["bad_checkpoint"]["reason"]
    # The same time, or two checkpoints of one size at different times, are honest.
    same = [checkpoint(HONEST[:5], DAY_2), checkpoint(HONEST, DAY_2), *entries(HONEST)]
    assert verify(tmp_path, same)[0] == 0
    twice = [checkpoint(HONEST, DAY_2), checkpoint(HONEST, DAY_1), *entries(HONEST)]
    assert verify(tmp_path, twice)[0] == 0
