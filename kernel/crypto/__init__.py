"""Crypto-shredding: personal fields are encrypted under a per-subject key that can be destroyed.

Three levels of keys, each AES-256-GCM with a random 12-byte nonce prepended to the ciphertext:

* master keys (from configuration, never stored) wrap one key per tenant;
* the tenant key wraps one key per subject (a person whose data the events hold);
* the subject key encrypts chosen top-level fields of event payloads.

A subject key may instead be a child of another subject of the same tenant (a ticket of its
requester): it is then wrapped under the parent's subject key, not the tenant key. Children nest
one level only; a parent is always a top-level subject.

Erasing a subject destroys its wrapped key; erasing a parent thereby makes all its children
unreadable at once, without touching them; erasing a tenant destroys the tenant key, which makes
every subject key under it unreadable at once. Events are never rewritten: after erasure their
encrypted fields decrypt to ``ERASED``, so replays and projection rebuilds keep working.

Nothing here logs key material or plaintext; log lines carry ids only.

One module per job, each imported from where it is (this package re-exports nothing):

- ``kernel.crypto.primitives``: sealing and key wrapping, the associated data of each use, and
  the errors;
- ``kernel.crypto.keystore``: ``Keystore``, the tenant and subject keys in their own database;
  shredding and master-key rotation;
- ``kernel.crypto.keycache``: the keystore's short in-process cache of subject keys, timed by a
  clock a test can move;
- ``kernel.crypto.fields``: ``FieldCipher``, which encrypts chosen payload fields under a
  subject's key and reads them back (``ERASED`` once it is gone), and the stored form of an
  encrypted field in a read model;
- ``kernel.crypto.blind_index``: ``BlindIndex``, keyed hashes of normalised values under a key
  derived from the tenant's, for exact lookups without a plaintext copy;
- ``kernel.crypto.blobs``: ``BlobCipher``, the chunks of a file (an attachment) sealed under a
  subject's key, each bound to its file and place.
"""
