"""Signed notes, checkpoints and the audit key list (``kernel.signed_note``).

The note vectors are the published ones of the signed-note reference implementation (the Go
module golang.org/x/mod, sumdb/note/note_test.go): a signing key, its verifier key, a text and
the exact signed note; and a second signature by another key. The checkpoint text is the
example of the C2SP tlog-checkpoint specification. Ed25519 is deterministic, so signing the
vector's text with the vector's key must give the published bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kernel import signed_note as note
from kernel.config import ConfigurationError, Settings
from kernel.signing import Signer, check_signing_key, published_keys, signer_from_config

# --- the published vectors ----------------------------------------------------------------------

# "PRIVATE+KEY+PeterNeumann+c74f20a3+" followed by base64(0x01 || 32-byte Ed25519 seed).
PETER_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdng"
    "otpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwn"
    "WLox33WWd1RvMc+QQ=\n"
)
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)


def public_of(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


PETER = Ed25519PrivateKey.from_private_bytes(PETER_SEED)
PETER_NAME, PETER_PUBLIC = note.parse_verifier_key(PETER_VKEY)
ENOCH_NAME, ENOCH_PUBLIC = note.parse_verifier_key(ENOCH_VKEY)


def test_the_published_verifier_key_is_the_one_derived_from_the_published_signing_key():
    assert public_of(PETER) == PETER_PUBLIC
    assert note.verifier_key("PeterNeumann", PETER_PUBLIC) == PETER_VKEY
    assert note.key_id("PeterNeumann", PETER_PUBLIC) == 0xC74F20A3
    assert note.key_id("EnochRoot", ENOCH_PUBLIC) == 0xAF0CFE78


def test_signing_the_published_text_gives_the_published_note_byte_for_byte():
    assert note.sign_note(TEXT, "PeterNeumann", PETER_PUBLIC, PETER.sign) == (
        TEXT + "\n" + PETER_SIG
    )


def test_a_note_opens_with_the_known_keys_and_ignores_unknown_ones():
    signed = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    text, verified = note.open_note(signed, [(PETER_NAME, PETER_PUBLIC)])
    assert (text, verified) == (TEXT, [(PETER_NAME, PETER_PUBLIC)])
    _, both = note.open_note(signed, [(PETER_NAME, PETER_PUBLIC), (ENOCH_NAME, ENOCH_PUBLIC)])
    assert both == [(PETER_NAME, PETER_PUBLIC), (ENOCH_NAME, ENOCH_PUBLIC)]
    with pytest.raises(note.NoteError, match="no verifiable signatures"):
        note.open_note(signed, [])
    # A known name with another key is an unknown key: its signature is ignored.
    with pytest.raises(note.NoteError, match="no verifiable signatures"):
        note.open_note(TEXT + "\n" + PETER_SIG, [(PETER_NAME, ENOCH_PUBLIC)])


def test_a_bad_signature_by_a_known_key_rejects_the_note():
    broken = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(note.NoteError, match="invalid signature for key PeterNeumann"):
        note.open_note(TEXT + "\n" + broken, [(PETER_NAME, PETER_PUBLIC)])
    with pytest.raises(note.NoteError, match="invalid signature"):
        note.open_note(
            TEXT.replace("problem", "answer") + "\n" + PETER_SIG, [(PETER_NAME, PETER_PUBLIC)]
        )


@pytest.mark.parametrize(
    "signed",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + "\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
        "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    ],
)
def test_malformed_notes_are_refused(signed):
    with pytest.raises(note.NoteError):
        note.open_note(signed, [(PETER_NAME, PETER_PUBLIC)])


@pytest.mark.parametrize(
    "mangled",
    [
        PETER_VKEY[:-1],
        PETER_VKEY[1:],
        PETER_VKEY.replace("c74f20a3", "c74f20a4"),
        PETER_VKEY.replace("Peter", "Petra"),
        PETER_VKEY.replace("+ARpc", "+ZRpc"),  # not Ed25519
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_mangled_verifier_keys_are_refused(mangled):
    with pytest.raises(note.NoteError):
        note.parse_verifier_key(mangled)


# --- checkpoints --------------------------------------------------------------------------------


def test_the_specification_example_parses_as_a_checkpoint():
    checkpoint = note.parse_checkpoint(SPEC_CHECKPOINT)
    assert (checkpoint.origin, checkpoint.tree_size) == ("example.com/behind-the-sofa", 20852163)
    assert checkpoint.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert (checkpoint.extensions, checkpoint.signed_at) == ((), None)
    assert (
        note.checkpoint_text(checkpoint.origin, checkpoint.tree_size, checkpoint.root_hash)
        == SPEC_CHECKPOINT
    )


def test_a_checkpoint_carries_its_time_of_signing_in_an_extension_line():
    text = note.checkpoint_text(
        "ledgerdesk.audit/x", 7, bytes(range(32)), "2026-12-01T10:00:00+00:00"
    )
    assert text == (
        "ledgerdesk.audit/x\n7\n"
        + base64.b64encode(bytes(range(32))).decode()
        + "\nsigned-at 2026-12-01T10:00:00+00:00\n"
    )
    assert note.parse_checkpoint(text).signed_at == "2026-12-01T10:00:00+00:00"


@pytest.mark.parametrize(
    "text",
    [
        "origin\n7\n",
        "origin\n07\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n7\n" + base64.b64encode(bytes(31)).decode() + "\n",
        "origin\n7\n" + base64.b64encode(bytes(32)).decode() + "\n\nsigned-at x\n",
        "origin\n7\n" + base64.b64encode(bytes(32)).decode(),
    ],
)
def test_malformed_checkpoints_are_refused(text):
    with pytest.raises(note.NoteError):
        note.parse_checkpoint(text)


def test_checkpoint_fields_that_would_frame_another_checkpoint_are_refused():
    with pytest.raises(note.NoteError):
        note.checkpoint_text("evil\n999", 1, bytes(32))
    with pytest.raises(note.NoteError):
        note.checkpoint_text("origin", 1, bytes(32), "2026-12-01\nsigned-at 1999-01-01")


# --- checkpoints under keys with validity periods ------------------------------------------------

ORIGIN = "ledgerdesk.audit/unit"
OLD = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
NEW = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
ROTATED = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
KEYS = (
    note.PublicKey(public_of(OLD), note.EPOCH, ROTATED),
    note.PublicKey(public_of(NEW), ROTATED, None),
)


def signed_checkpoint(private: Ed25519PrivateKey, at: dt.datetime, origin: str = ORIGIN) -> str:
    text = note.checkpoint_text(origin, 3, bytes(32), at.isoformat())
    return note.sign_note(text, origin, public_of(private), private.sign)


def test_a_checkpoint_opens_under_the_key_valid_when_it_was_signed():
    before, after = ROTATED - dt.timedelta(seconds=1), ROTATED
    checkpoint, key = note.open_checkpoint(signed_checkpoint(OLD, before), ORIGIN, KEYS)
    assert (checkpoint.tree_size, key) == (3, KEYS[0])
    _, key = note.open_checkpoint(signed_checkpoint(NEW, after), ORIGIN, KEYS)
    assert key == KEYS[1]


@pytest.mark.parametrize(
    "signer, at",
    [
        (OLD, ROTATED),  # a rotated-out key signing at (or after) the end of its period
        (NEW, ROTATED - dt.timedelta(microseconds=1)),  # a new key before its period
    ],
)
def test_a_checkpoint_signed_outside_its_keys_period_does_not_open(signer, at):
    with pytest.raises(note.NoteError, match="outside the validity period"):
        note.open_checkpoint(signed_checkpoint(signer, at), ORIGIN, KEYS)


def test_a_checkpoint_of_another_log_or_without_its_time_or_by_another_key_does_not_open():
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(note.NoteError, match="no verifiable signatures"):
        note.open_checkpoint(signed_checkpoint(stranger, ROTATED), ORIGIN, KEYS)
    with pytest.raises(note.NoteError, match="no verifiable signatures"):
        note.open_checkpoint(signed_checkpoint(NEW, ROTATED, "other.log/x"), ORIGIN, KEYS)
    untimed = note.sign_note(
        note.checkpoint_text(ORIGIN, 3, bytes(32)), ORIGIN, public_of(NEW), NEW.sign
    )
    with pytest.raises(note.NoteError, match="no signed-at"):
        note.open_checkpoint(untimed, ORIGIN, KEYS)
    # Signed under this log's name, but stating another origin inside.
    text = note.checkpoint_text("other.log/x", 3, bytes(32), ROTATED.isoformat())
    with pytest.raises(note.NoteError, match="of log 'other.log/x'"):
        note.open_checkpoint(note.sign_note(text, ORIGIN, public_of(NEW), NEW.sign), ORIGIN, KEYS)


# --- the key list -------------------------------------------------------------------------------


def key_entry(private: Ed25519PrivateKey, **changes) -> dict:
    return {
        "public_key": base64.b64encode(public_of(private)).decode(),
        "valid_from": "2026-01-01T00:00:00+00:00",
        "valid_until": None,
        **changes,
    }


def test_a_key_list_parses_public_keys_and_verifier_keys_with_their_periods():
    raw = json.dumps(
        [
            key_entry(OLD, valid_until="2026-06-01T02:00:00+02:00"),
            {
                "verifier_key": note.verifier_key(ORIGIN, public_of(NEW)),
                "valid_from": "2026-06-01T00:00:00Z",
                "valid_until": None,
            },
        ]
    )
    keys = note.parse_key_list(raw, ORIGIN)
    assert keys == (
        note.PublicKey(public_of(OLD), dt.datetime(2026, 1, 1, tzinfo=dt.UTC), ROTATED),
        note.PublicKey(public_of(NEW), ROTATED, None),
    )
    assert note.current_key(keys, ROTATED) == keys[1]
    assert note.current_key(keys, ROTATED - dt.timedelta(seconds=1)) == keys[0]


@pytest.mark.parametrize(
    "raw, message",
    [
        ("not json", "not JSON"),
        ("[]", "non-empty JSON array"),
        ('{"public_key": "x"}', "non-empty JSON array"),
        (json.dumps([key_entry(OLD, public_key="AAAA")]), "base64 of 32 bytes"),
        (json.dumps([key_entry(OLD, public_key="not base64!")]), "not base64"),
        (json.dumps([key_entry(OLD, valid_from="2026-01-01T00:00:00")]), "needs its offset"),
        (json.dumps([key_entry(OLD, valid_until="2025-01-01T00:00:00Z")]), "must be after"),
        (json.dumps([{k: v for k, v in key_entry(OLD).items() if k != "valid_until"}]), "needs"),
        (json.dumps([key_entry(OLD, seed="secret")]), "unknown fields: seed"),
        (
            json.dumps(
                [
                    {
                        "verifier_key": note.verifier_key("other.log/x", public_of(NEW)),
                        "valid_from": "2026-01-01T00:00:00Z",
                        "valid_until": None,
                    }
                ]
            ),
            "names 'other.log/x'",
        ),
    ],
)
def test_malformed_key_lists_are_refused_saying_why(raw, message):
    with pytest.raises(note.NoteError, match=message):
        note.parse_key_list(raw, ORIGIN)


# --- configuration ------------------------------------------------------------------------------


def test_the_key_list_and_origin_are_read_from_the_environment():
    raw = json.dumps([key_entry(OLD)])
    settings = Settings.from_env(
        {"LEDGERDESK_AUDIT_PUBLIC_KEYS": raw, "LEDGERDESK_AUDIT_LOG_ORIGIN": "audit.example/x"}
    )
    assert settings.audit_public_keys == note.parse_key_list(raw)
    assert settings.audit_origin == "audit.example/x"
    defaults = Settings.from_env({"LEDGERDESK_DATABASE_PREFIX": "acme"})
    assert (defaults.audit_public_keys, defaults.audit_origin) == (None, "ledgerdesk.audit/acme")


def test_a_malformed_key_list_or_origin_is_a_configuration_error_naming_the_variable():
    with pytest.raises(ConfigurationError, match="LEDGERDESK_AUDIT_PUBLIC_KEYS: .*base64"):
        Settings.from_env(
            {"LEDGERDESK_AUDIT_PUBLIC_KEYS": json.dumps([key_entry(OLD, public_key="AA==")])}
        )
    with pytest.raises(ConfigurationError, match="LEDGERDESK_AUDIT_LOG_ORIGIN"):
        Settings.from_env({"LEDGERDESK_AUDIT_LOG_ORIGIN": "has a space"})


def test_development_derives_the_published_key_from_the_seed_production_never_does():
    dev = Settings.from_env({})
    seed_key = signer_from_config(dev.audit_signing_key).public_key
    assert published_keys(dev) == (note.PublicKey(seed_key, note.EPOCH, None),)

    listed = Settings.from_env({"LEDGERDESK_AUDIT_PUBLIC_KEYS": json.dumps([key_entry(NEW)])})
    assert [k.public_key for k in published_keys(listed)] == [public_of(NEW)]

    production = dev.with_overrides(environment="production")
    with pytest.raises(ConfigurationError, match="LEDGERDESK_AUDIT_PUBLIC_KEYS"):
        published_keys(production)


def test_a_signing_key_must_be_listed_and_valid_now():
    old = Signer(bytes(range(32)))
    assert check_signing_key(old, KEYS, ROTATED - dt.timedelta(days=1)) == KEYS[0]
    with pytest.raises(ConfigurationError, match="not valid now"):
        check_signing_key(old, KEYS, ROTATED)
    with pytest.raises(ConfigurationError, match="not in LEDGERDESK_AUDIT_PUBLIC_KEYS"):
        check_signing_key(Signer(bytes(range(2, 34))), KEYS, ROTATED)
