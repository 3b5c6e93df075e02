"""Auditors verify offline, with the published public keys alone: the export of the single
chain that releases before the per-tenant logs recorded into (frozen since, and built here as
they built it).

A whole platform runs with its audit keys configured as production would have them
(``LEDGERDESK_AUDIT_PUBLIC_KEYS``: the key signing now, and the next one announced ahead of its
period). Its ledger is exported by the operator's command line, the keys are fetched from
``GET /v1/audit/public-key``, and the offline verifier runs in a process of its own with no
``LEDGERDESK_*`` setting at all: no database, no seed. Then the export is tampered with the way
whoever holds the file could (an edited, deleted, inserted or reordered entry, a forged or
altered checkpoint, a rotated-out key signing after its period) and each is caught with exit 1,
naming where; a missing file or malformed keys exit 2.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nameko.standalone.rpc import ClusterRpcProxy

from kernel.config import DEV_AUDIT_SIGNING_KEY
from kernel.envelope import new_envelope
from kernel.signed_note import parse_verifier_key
from kernel.signing import Signer, signer_from_config
from kernel.testing import Infrastructure, wait_until, world_env
from services.audit import chain, merkle
from services.audit.ledger import open_ledger
from tests.e2e.conftest import Stack, running_stack
from tests.support.audit_keys import EPOCH, NEXT, b64, configured_keys

ORIGIN = "audit.ledgerdesk.test/e2e"
ROOT = Path(__file__).resolve().parents[2]


def seed_signer(stack: Stack) -> Signer:
    return signer_from_config(stack.settings.audit_signing_key)


@pytest.fixture(scope="module")
def stack(infrastructure: Infrastructure) -> Iterator[Stack]:
    with running_stack(
        infrastructure,
        LEDGERDESK_AUDIT_LOG_ORIGIN=ORIGIN,
        # The test signs its checkpoints itself, where it needs them.
        LEDGERDESK_CHECKPOINT_SECONDS="3600",
        LEDGERDESK_AUDIT_PUBLIC_KEYS=json.dumps(configured_keys(DEV_AUDIT_SIGNING_KEY)),
    ) as running:
        yield running


# --- an export from the running stack -----------------------------------------------------------


@dataclasses.dataclass
class Exported:
    path: Path
    keys: dict[str, Any]
    header: dict[str, Any]
    checkpoints: list[dict[str, Any]]
    entries: list[dict[str, Any]]

    def write(self, folder: Path, checkpoints=None, entries=None, name="export.jsonl") -> Path:
        path = folder / name
        lines = [self.header, *(self.checkpoints if checkpoints is None else checkpoints)]
        lines += self.entries if entries is None else entries
        path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        return path


def latest_entry(stack: Stack, key: str, after: int) -> int:
    """The last seq of the frozen chain that the tenant's listing shows, once past ``after``."""

    def probe() -> int:
        response = stack.call("GET", "/v1/audit/entries", key, params={"limit": "200"})
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        seqs = [item["seq"] for item in items if item["log"] == "frozen"]
        return max(seqs, default=0) if max(seqs, default=0) > after else 0

    return wait_until(probe, timeout=60, interval=0.2, what=f"an entry after {after}")


def sign_checkpoint_covering(stack: Stack, key: str, seq: int) -> int:
    """Have the audit service sign a checkpoint now (as its timer does), then take the proof of
    ``seq`` of the frozen chain against it: proofs never sign one on demand."""
    with ClusterRpcProxy({"AMQP_URI": stack.settings.amqp_uri}, timeout=30) as cluster:
        cluster.audit.checkpoint()
    response = stack.call("GET", f"/v1/audit/entries/{seq}/proof?log=frozen", key)
    assert response.status_code == 200, response.text
    checkpoint = response.json()["checkpoint"]
    assert checkpoint["note"], "a new checkpoint is stored as its signed note"
    return checkpoint["tree_size"]


def signed_up(stack: Stack, who: str) -> tuple[str, str]:
    """A new tenant's admin key and the tenant's id."""
    admin = {"name": who, "email": f"{who.lower()}-{os.urandom(4).hex()}@example.com"}
    answer = stack.sign_up(company=f"{who} Ltd", admin=admin)
    return answer["api_key"], answer["tenant"]["id"]


def add_contact(stack: Stack, tenant_id: str, name: str, versions: int = 4) -> None:
    """A contact's creation and changes recorded in the single chain, as releases before the
    per-tenant logs recorded every event: the running service records into the logs, and
    ``export`` and this verifier are of that chain (it stays readable and provable as before)."""
    contact = str(uuid.uuid4())
    ledger = open_ledger(stack.settings)
    try:
        for version in range(1, versions + 1):
            ledger.record(
                new_envelope(
                    type="contact_created" if version == 1 else "contact_updated",
                    schema_version=1,
                    source="accounts",
                    stream_id=f"contact-{contact}",
                    stream_version=version,
                    tenant_id=uuid.UUID(tenant_id),
                    actor_id=None,
                    payload={"contact_id": contact, "name": f"{name} {version}"},
                )
            )
    finally:
        ledger.db.close()


def run(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def bare_env() -> dict[str, str]:
    """No LEDGERDESK_* setting: the verifier must need no database, broker or seed."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.fixture(scope="module")
def exported(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    admin, tenant = signed_up(stack, "Auditee")
    sizes: list[int] = []
    for name in ("Ada", "Grace"):
        add_contact(stack, tenant, name)
        seq = latest_entry(stack, admin, max(sizes, default=0))
        sizes.append(sign_checkpoint_covering(stack, admin, seq))
    add_contact(stack, tenant, "Edsger")  # entries after the newest checkpoint, too
    last = latest_entry(stack, admin, sizes[-1])

    response = stack.call("GET", "/v1/audit/public-key", admin)
    assert response.status_code == 200, response.text
    # The processes publish the list configured, the next key too (what the endpoint makes of
    # it: tests/unit/gateway/test_gateway_entrypoints.py).
    published = response.json()["keys"]
    configured = configured_keys(stack.settings.audit_signing_key)
    assert [{k: key[k] for k in configured[0]} for key in published] == configured
    folder = tmp_path_factory.mktemp("export")
    done = run("services.audit.cli", "export", str(folder), env=world_env(stack.settings))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    path = Path(summary["path"])
    assert path == folder / "audit-export.jsonl"

    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    header, rest = lines[0], lines[1:]
    checkpoints = [line for line in rest if line["type"] == "checkpoint"]
    entries = [line for line in rest if line["type"] == "entry"]
    assert rest == checkpoints + entries, "checkpoints first, then entries"
    assert (summary["entries"], summary["checkpoints"]) == (len(entries), len(checkpoints))
    assert summary["covered_until"] == len(entries)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    # Those asked for, and any the audit service's timer signed meanwhile.
    assert set(sizes) <= {c["tree_size"] for c in checkpoints}
    # The export signs a checkpoint over the entries after the newest one, and stops at it:
    # every entry it holds is covered by a signature.
    assert len(entries) == checkpoints[-1]["tree_size"] >= last > sizes[-1]
    assert header["origin"] == ORIGIN
    return Exported(path, response.json(), header, checkpoints, entries)


@pytest.fixture
def keys_file(exported: Exported, tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(exported.keys), encoding="utf-8")
    return path


def verify(export: Path, keys: Path | str, *options: str) -> tuple[int, dict[str, Any] | None, str]:
    done = run(
        "services.audit.offline_verify", str(export), "--keys", str(keys), *options, env=bare_env()
    )
    result = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, result, done.stderr


# --- verified -----------------------------------------------------------------------------------


def test_an_export_verifies_with_the_published_keys_alone(exported, keys_file):
    code, result, stderr = verify(exported.path, keys_file)
    assert code == 0, stderr
    assert result is not None
    assert (result["ok"], result["first_bad_seq"], result["bad_checkpoint"]) == (True, None, None)
    assert result["entries"] == len(exported.entries)
    assert result["checkpoints"] == len(exported.checkpoints)
    assert result["verified_until"] == exported.checkpoints[-1]["tree_size"]
    assert result["not_covered"] == 0
    assert result["head"]["hash"] == exported.entries[-1]["hash"]
    # The folder works as well as the file, and the keys as inline JSON as well as a file.
    code, _, stderr = verify(exported.path.parent, json.dumps(exported.keys))
    assert code == 0, stderr


def test_each_checkpoint_is_a_standard_signed_note_under_the_published_verifier_key(exported):
    name, public = parse_verifier_key(exported.keys["verifier_key"])
    for checkpoint in exported.checkpoints:
        text, _, signature_line = checkpoint["note"].rpartition("\n\n")
        origin, size, root, signed_at = text.split("\n")
        assert (origin, int(size), base64.b64decode(root).hex()) == (
            ORIGIN,
            checkpoint["tree_size"],
            checkpoint["root_hash"],
        )
        assert signed_at == f"signed-at {checkpoint['signed_at']}"
        dash, key_name, encoded = signature_line.rstrip("\n").split(" ")
        raw = base64.b64decode(encoded)
        assert (dash, key_name, raw[:4].hex()) == (
            "\u2014",
            name,
            exported.keys["verifier_key"].split("+")[1],
        )
        # The signature checks with the public key alone, over the note's text.
        Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], (text + "\n").encode())


# --- tampered -----------------------------------------------------------------------------------


def inside_signed_range(exported: Exported) -> int:
    """An entry that a checkpoint covers, with entries on both sides."""
    return max(2, exported.checkpoints[0]["tree_size"] // 2)


def entry_line(seq: int, content: str, prev_hash: str) -> dict[str, Any]:
    hashed = chain.entry_hash(bytes.fromhex(prev_hash), seq, content.encode())
    return {
        "type": "entry",
        "seq": seq,
        "content": content,
        "prev_hash": prev_hash,
        "hash": hashed.hex(),
    }


def edit(content: str) -> str:
    parsed = json.loads(content)
    parsed["type"] = "nothing_happened"
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_an_edited_entry_is_found_at_its_seq(exported, keys_file, tmp_path):
    k = inside_signed_range(exported)
    entries = [dict(e) for e in exported.entries]
    entries[k - 1]["content"] = edit(entries[k - 1]["content"])
    code, result, stderr = verify(exported.write(tmp_path, entries=entries), keys_file)
    assert code == 1, stderr
    assert result["first_bad_seq"] == k
    assert f"first bad seq {k}" in stderr


def test_an_edited_chain_rehashed_to_the_end_is_caught_by_the_first_checkpoint(
    exported, keys_file, tmp_path
):
    k = inside_signed_range(exported)
    entries = [dict(e) for e in exported.entries[: k - 1]]
    for original in exported.entries[k - 1 :]:
        content = edit(original["content"]) if original["seq"] == k else original["content"]
        entries.append(entry_line(original["seq"], content, entries[-1]["hash"]))
    code, result, stderr = verify(exported.write(tmp_path, entries=entries), keys_file)
    assert code == 1, stderr
    assert (result["first_bad_seq"], result["bad_checkpoint"]["tree_size"]) == (
        1,
        exported.checkpoints[0]["tree_size"],
    )


def test_a_deleted_entry_is_found_at_its_seq(exported, keys_file, tmp_path):
    k = inside_signed_range(exported)
    entries = exported.entries[: k - 1] + exported.entries[k:]
    code, result, stderr = verify(exported.write(tmp_path, entries=entries), keys_file)
    assert code == 1, stderr
    assert result["first_bad_seq"] == k


def test_deleting_the_signed_tail_is_caught_by_the_checkpoint_that_covered_it(
    exported, keys_file, tmp_path
):
    first, second = (c["tree_size"] for c in exported.checkpoints[:2])
    entries = exported.entries[: second - 1]
    code, result, stderr = verify(exported.write(tmp_path, entries=entries), keys_file)
    assert code == 1, stderr
    assert (result["first_bad_seq"], result["bad_checkpoint"]["tree_size"]) == (first + 1, second)


def test_entries_after_the_newest_checkpoint_are_not_covered_unless_accepted(
    exported, keys_file, tmp_path
):
    # Appended with honest hashes: a hash chain has no key, so only a signature could tell.
    entries = [*exported.entries]
    for n in range(2):
        content = json.dumps({"type": "appended_unsigned", "n": n}, separators=(",", ":"))
        entries.append(entry_line(len(entries) + 1, content, entries[-1]["hash"]))
    path = exported.write(tmp_path, entries=entries)
    code, result, stderr = verify(path, keys_file)
    assert code == 1, stderr
    assert (result["not_covered"], result["first_bad_seq"]) == (2, len(exported.entries) + 1)
    assert "not covered" in stderr
    code, result, stderr = verify(path, keys_file, "--allow-unsigned-tail")
    assert code == 0, stderr
    assert (result["verified_until"], result["not_covered"]) == (len(exported.entries), 2)


def test_an_export_cut_short_with_its_checkpoints_falls_short_of_the_expected_size(
    exported, keys_file, tmp_path
):
    # Cut at an earlier checkpoint, the later ones dropped along with their entries.
    kept = exported.checkpoints[:-1]
    entries = exported.entries[: kept[-1]["tree_size"]]
    path = exported.write(tmp_path, checkpoints=kept, entries=entries)
    newest = exported.checkpoints[-1]
    assert verify(path, keys_file)[0] == 0, "alone, the cut-short export is whole and signed"
    code, result, stderr = verify(path, keys_file, "--expect-size", str(newest["tree_size"]))
    assert code == 1, stderr
    assert f"fewer than the expected {newest['tree_size']}" in result["refused"]
    pin = ("--expect-size", str(newest["tree_size"]), "--expect-root", newest["root_hash"])
    code, _, stderr = verify(exported.path, keys_file, *pin)
    assert code == 0, stderr


def test_an_inserted_entry_is_found_even_with_honest_hashes(exported, keys_file, tmp_path):
    k = inside_signed_range(exported)
    before = exported.entries[: k - 1]
    forged = entry_line(k, edit(exported.entries[k - 1]["content"]), before[-1]["hash"])
    shifted = [{**e, "seq": e["seq"] + 1} for e in exported.entries[k - 1 :]]
    code, result, stderr = verify(
        exported.write(tmp_path, entries=[*before, forged, *shifted]), keys_file
    )
    assert code == 1, stderr
    # The forged row links; the first shifted row is bound to its old number and predecessor.
    assert result["first_bad_seq"] == k + 1


def test_reordered_entries_are_found_at_the_first_moved(exported, keys_file, tmp_path):
    i = inside_signed_range(exported)
    j = i + 1
    entries = list(exported.entries)
    entries[i - 1], entries[j - 1] = entries[j - 1], entries[i - 1]
    code, result, stderr = verify(exported.write(tmp_path, entries=entries), keys_file)
    assert code == 1, stderr
    assert result["first_bad_seq"] == i


def resigned(checkpoint: dict[str, Any], signer: Signer, **changes: Any) -> dict[str, Any]:
    changed = {**checkpoint, **changes}
    note = signer.sign_checkpoint(
        ORIGIN, changed["tree_size"], bytes.fromhex(changed["root_hash"]), changed["signed_at"]
    )
    return {**changed, "note": note, "public_key": signer.public_key_b64, "key_id": signer.key_id}


def test_checkpoints_forged_with_another_key_over_a_rewritten_chain_are_caught(
    exported, keys_file, tmp_path
):
    forger = Signer(bytes(range(7, 39)))
    k = inside_signed_range(exported)
    entries = [dict(e) for e in exported.entries[: k - 1]]
    for original in exported.entries[k - 1 :]:
        content = edit(original["content"]) if original["seq"] == k else original["content"]
        entries.append(entry_line(original["seq"], content, entries[-1]["hash"]))
    leaves = [chain.leaf_hash(e["content"].encode()) for e in entries]
    checkpoints = [
        resigned(c, forger, root_hash=merkle.root(leaves[: c["tree_size"]]).hex())
        for c in exported.checkpoints
    ]
    code, result, stderr = verify(
        exported.write(tmp_path, checkpoints=checkpoints, entries=entries), keys_file
    )
    assert code == 1, stderr
    assert result["first_bad_seq"] == 1
    assert "no verifiable signatures" in result["bad_checkpoint"]["reason"]


def test_a_checkpoint_with_an_altered_root_is_caught(exported, keys_file, tmp_path):
    target = exported.checkpoints[1]
    altered_root = bytes(32)
    origin, size, _, *rest = target["note"].split("\n")
    note = "\n".join([origin, size, b64(altered_root), *rest])
    checkpoints = [
        exported.checkpoints[0],
        {**target, "note": note, "root_hash": altered_root.hex()},
    ]
    code, result, stderr = verify(exported.write(tmp_path, checkpoints=checkpoints), keys_file)
    assert code == 1, stderr
    assert result["first_bad_seq"] == exported.checkpoints[0]["tree_size"] + 1
    assert "invalid signature" in result["bad_checkpoint"]["reason"]


# --- key rotation -------------------------------------------------------------------------------


def rotated_keys(stack: Stack, rotated_at: dt.datetime, new: Signer) -> dict[str, Any]:
    return {
        "origin": ORIGIN,
        "keys": [
            {
                "public_key": seed_signer(stack).public_key_b64,
                "valid_from": EPOCH,
                "valid_until": rotated_at.isoformat(),
            },
            {
                "public_key": new.public_key_b64,
                "valid_from": rotated_at.isoformat(),
                "valid_until": None,
            },
        ],
    }


def extended(exported: Exported, count: int) -> list[dict[str, Any]]:
    """The export's entries and ``count`` more appended honestly, as the ledger would."""
    entries = list(exported.entries)
    for n in range(count):
        content = json.dumps({"type": "appended_after_rotation", "n": n}, separators=(",", ":"))
        entries.append(entry_line(len(entries) + 1, content, entries[-1]["hash"]))
    return entries


def checkpoint_by(signer: Signer, entries: list[dict[str, Any]], signed_at: dt.datetime) -> dict:
    root = merkle.root([chain.leaf_hash(e["content"].encode()) for e in entries])
    record = {"type": "checkpoint", "tree_size": len(entries), "root_hash": root.hex()}
    return resigned({**record, "signed_at": signed_at.isoformat(), "signature": ""}, signer)


def test_old_checkpoints_still_verify_after_a_new_key_signs(stack, exported, tmp_path):
    rotated_at = dt.datetime.now(dt.UTC)
    new = Signer(NEXT.private_bytes_raw())
    entries = extended(exported, 3)
    checkpoints = [
        *exported.checkpoints,
        checkpoint_by(new, entries, rotated_at + dt.timedelta(seconds=1)),
    ]
    keys = tmp_path / "rotated.json"
    keys.write_text(json.dumps(rotated_keys(stack, rotated_at, new)), encoding="utf-8")
    code, result, stderr = verify(
        exported.write(tmp_path, checkpoints=checkpoints, entries=entries), keys
    )
    assert code == 0, stderr
    assert (result["checkpoints"], result["verified_until"]) == (len(checkpoints), len(entries))


def test_a_rotated_out_key_signing_after_its_period_is_caught(stack, exported, tmp_path):
    rotated_at = dt.datetime.now(dt.UTC)
    entries = extended(exported, 3)
    late = checkpoint_by(seed_signer(stack), entries, rotated_at + dt.timedelta(seconds=1))
    keys = tmp_path / "rotated.json"
    keys.write_text(
        json.dumps(rotated_keys(stack, rotated_at, Signer(NEXT.private_bytes_raw()))),
        encoding="utf-8",
    )
    code, result, stderr = verify(
        exported.write(tmp_path, checkpoints=[*exported.checkpoints, late], entries=entries), keys
    )
    assert code == 1, stderr
    assert result["bad_checkpoint"]["tree_size"] == len(entries)
    assert "outside the validity period" in result["bad_checkpoint"]["reason"]
    assert result["first_bad_seq"] == exported.checkpoints[-1]["tree_size"] + 1


def test_checkpoints_signed_before_their_keys_listed_period_are_caught(stack, exported, tmp_path):
    keys = tmp_path / "expired.json"
    long_ago = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    keys.write_text(
        json.dumps(rotated_keys(stack, long_ago, Signer(NEXT.private_bytes_raw()))),
        encoding="utf-8",
    )
    code, result, stderr = verify(exported.path, keys)
    assert code == 1, stderr
    assert result["first_bad_seq"] == 1
    assert result["bad_checkpoint"]["tree_size"] == exported.checkpoints[0]["tree_size"]


# --- could not run ------------------------------------------------------------------------------


def test_a_missing_export_or_keys_or_malformed_keys_exit_2(exported, keys_file, tmp_path):
    code, result, stderr = verify(tmp_path / "no-such-export.jsonl", keys_file)
    assert (code, result) == (2, None)
    assert "could not verify" in stderr
    code, _, stderr = verify(exported.path, tmp_path / "no-such-keys.json")
    assert code == 2, stderr
    code, _, stderr = verify(exported.path, '[{"public_key": "AAAA"}]')
    assert code == 2, stderr
    (tmp_path / "not-an-export.jsonl").write_text('{"hello": 1}\n', encoding="utf-8")
    code, _, stderr = verify(tmp_path / "not-an-export.jsonl", keys_file)
    assert code == 2, stderr
