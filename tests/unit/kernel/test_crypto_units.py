"""Crypto-shredding pieces that need no database: the erased marker, key wrapping, field cipher."""

import base64
import copy
import json
import pickle
import uuid

import pytest

from kernel.crypto.fields import ERASED, Erased, FieldCipher, is_encrypted, is_erased
from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import KeyShredded, TamperedCiphertext, unwrap_key, wrap_key

KEK = bytes(range(32))
KEY = bytes(range(32, 64))


class MemoryKeystore:
    """Stands in for ``Keystore``: one key per subject, shreddable, no database."""

    def __init__(self):
        self.keys: dict[uuid.UUID, bytes | None] = {}
        self.tenants: dict[uuid.UUID, uuid.UUID] = {}

    def subject_key(self, tenant_id, subject_id, create=True, parent_id=None):
        if subject_id not in self.keys:
            if not create:
                return None
            self.keys[subject_id] = bytes(uuid.uuid4().bytes * 2)
            self.tenants[subject_id] = tenant_id
        key = self.keys[subject_id]
        if key is None and create:
            raise KeyShredded(str(subject_id))
        return key

    def shred_subject(self, subject_id):
        self.keys[subject_id] = None


def test_erased_dumps_as_text_and_is_told_apart_by_type():
    assert json.dumps({"name": ERASED}) == '{"name": "[erased]"}'
    assert is_erased(ERASED)
    assert is_erased(Erased())
    assert not is_erased("[erased]")
    assert not is_erased(json.loads(json.dumps(ERASED)))
    assert not is_erased(None)
    assert repr(ERASED) == "ERASED"


def test_erased_survives_copy_and_pickle():
    assert is_erased(copy.deepcopy(ERASED))
    assert is_erased(pickle.loads(pickle.dumps({"x": ERASED}))["x"])


def test_wrap_round_trip_uses_a_fresh_nonce_each_time():
    first, second = wrap_key(KEK, KEY, b"aad"), wrap_key(KEK, KEY, b"aad")
    assert first != second
    assert len(first) == 12 + 32 + 16
    assert KEY not in first
    assert unwrap_key(KEK, first, b"aad") == KEY == unwrap_key(KEK, second, b"aad")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda blob, aad, kek: (blob[:-1] + bytes([blob[-1] ^ 1]), aad, kek),
        lambda blob, aad, kek: (bytes([blob[0] ^ 1]) + blob[1:], aad, kek),
        lambda blob, aad, kek: (blob[:20], aad, kek),
        lambda blob, aad, kek: (blob, aad + b"x", kek),
        lambda blob, aad, kek: (blob, aad, bytes(32)),
    ],
    ids=["ciphertext", "nonce", "truncated", "associated-data", "wrong-key"],
)
def test_unwrap_detects_tampering(tamper):
    blob, aad, kek = tamper(wrap_key(KEK, KEY, b"tenant"), b"tenant", KEK)
    with pytest.raises(TamperedCiphertext):
        unwrap_key(kek, blob, aad)


def test_unwrap_refuses_a_blob_that_is_not_a_key():
    from kernel.crypto.primitives import seal

    with pytest.raises(TamperedCiphertext):
        unwrap_key(KEK, seal(KEK, b"short", b"aad"), b"aad")


def test_keystore_refuses_bad_master_keys():
    with pytest.raises(ValueError):
        Keystore(db=None, master_keys={})
    with pytest.raises(ValueError):
        Keystore(db=None, master_keys={"k1": b"too short"})
    keystore = Keystore(db=None, master_keys={"k2": KEK, "k1": KEY})
    assert keystore.current_master_key_id == "k2"


def test_field_cipher_round_trip_without_database():
    cipher = FieldCipher(MemoryKeystore())
    tenant, subject = uuid.uuid4(), uuid.uuid4()
    payload = {"email": "a@example.org", "age": 41, "tags": ["x"], "note": None, "open": 1}
    sealed = cipher.encrypt_fields(
        payload, ["email", "age", "tags", "note", "absent"], tenant, subject
    )
    assert sealed is not payload and payload["email"] == "a@example.org"
    assert sealed["note"] is None and sealed["open"] == 1 and "absent" not in sealed
    for name in ("email", "age", "tags"):
        assert is_encrypted(sealed[name])
        assert sealed[name]["tenant"] == str(tenant) and sealed[name]["subject"] == str(subject)
    assert "example" not in json.dumps(sealed)
    assert cipher.decrypt_fields(json.loads(json.dumps(sealed))) == payload
    assert cipher.subjects_in(sealed) == {subject}
    assert cipher.subjects_in(payload) == set()


def test_field_cipher_reads_erased_and_detects_moved_values():
    keystore = MemoryKeystore()
    cipher = FieldCipher(keystore)
    tenant, subject = uuid.uuid4(), uuid.uuid4()
    sealed = cipher.encrypt_fields(
        {"email": "a@b.c", "name": "Ann"}, ["email", "name"], tenant, subject
    )

    swapped = {"email": sealed["name"], "name": sealed["email"]}
    with pytest.raises(TamperedCiphertext):
        cipher.decrypt_fields(swapped)
    with pytest.raises(TamperedCiphertext):
        cipher.decrypt_fields(sealed, tenant_id=uuid.uuid4())
    with pytest.raises(TamperedCiphertext):
        cipher.decrypt_fields({"email": {"$enc": 1, "ct": "x"}})
    bad_b64 = dict(sealed["email"], ct="not base64!")
    with pytest.raises(TamperedCiphertext):
        cipher.decrypt_fields({"email": bad_b64})

    keystore.shred_subject(subject)
    opened = cipher.decrypt_fields(sealed, tenant_id=tenant)
    assert is_erased(opened["email"]) and is_erased(opened["name"])
    with pytest.raises(KeyShredded):
        cipher.encrypt_fields({"email": "new"}, ["email"], tenant, subject)


def test_field_cipher_refuses_to_encrypt_twice():
    cipher = FieldCipher(MemoryKeystore())
    tenant, subject = uuid.uuid4(), uuid.uuid4()
    sealed = cipher.encrypt_fields({"email": "a@b.c"}, ["email"], tenant, subject)
    with pytest.raises(ValueError):
        cipher.encrypt_fields(sealed, ["email"], tenant, subject)
    with pytest.raises(ValueError):
        cipher.encrypt_fields({"email": ERASED}, ["email"], tenant, subject)


def test_ciphertext_is_base64_of_nonce_and_ciphertext():
    cipher = FieldCipher(MemoryKeystore())
    sealed = cipher.encrypt_fields({"v": "abc"}, ["v"], uuid.uuid4(), uuid.uuid4())
    raw = base64.b64decode(sealed["v"]["ct"])
    assert len(raw) == 12 + len(b'"abc"') + 16
    assert sealed["v"]["$enc"] == 1


def test_the_four_kinds_of_associated_data_never_coincide():
    from kernel.crypto.primitives import child_key_aad, field_aad, subject_key_aad, tenant_key_aad

    tenant, parent, subject = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    child = child_key_aad(tenant, parent, subject)
    assert child.startswith(b"ledgerdesk/v1/child-key/")
    assert len({tenant_key_aad(tenant), subject_key_aad(tenant, subject), child}) == 3
    assert child != field_aad(tenant, parent, subject.hex)
    # A child key wrapped under its parent does not open as a top-level subject key.
    with pytest.raises(TamperedCiphertext):
        unwrap_key(KEK, wrap_key(KEK, KEY, child), subject_key_aad(tenant, subject))


def test_a_subject_cannot_be_its_own_parent():
    keystore = Keystore(db=None, master_keys={"k1": KEK})  # refused before any database work
    subject = uuid.uuid4()
    with pytest.raises(ValueError):
        keystore.subject_key(uuid.uuid4(), subject, parent_id=str(subject))


def test_the_stored_form_of_an_encrypted_field_is_compact_json_with_sorted_keys():
    import json as _json

    from kernel.crypto.fields import stored_field, stored_json

    field = {"tenant": str(uuid.uuid4()), "ct": "q+/=", "subject": str(uuid.uuid4()), "$enc": 1}
    row = {"body": stored_field(field), "name": "Zoë"}
    text = stored_json(row)
    assert _json.loads(text) == row
    # The field's text inside the row is what a reader finds in the text column.
    assert _json.dumps(field, separators=(",", ":"), sort_keys=True) in text
    with pytest.raises(ValueError):
        stored_field({"ct": "plaintext pretending"})
