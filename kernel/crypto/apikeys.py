"""API keys: ≥128 bits of entropy, shown once, stored as a keyed hash, compared in constant time.

HMAC-SHA-256 rather than a slow password hash: the keys are random, not guessable passwords,
and a slow hash would cost ~100 ms on every request. In the kernel because two services
compute it: accounts when it issues a key, the gateway when a request presents one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "ldk_"
# token_urlsafe(32): 256 bits in 43 characters. A key issued with a region reads
# ``ldk_<region>_<43 characters>``, so the router sends it to its cell without a lookup; one
# issued before regions were written into keys is ``ldk_<43 characters>``. The token's length
# tells the two apart: a token may itself hold "_", so splitting at the first one would not.
_TOKEN_CHARS = 43


def generate(region: str = "") -> str:
    token = secrets.token_urlsafe(32)
    return f"{PREFIX}{region}_{token}" if region else PREFIX + token


def region_of(api_key: str) -> str | None:
    """The region a key was issued in, or None for a key that names none (or no key at all)."""
    if not api_key.startswith(PREFIX):
        return None
    rest = api_key[len(PREFIX) :]
    if len(rest) <= _TOKEN_CHARS + 1 or rest[-_TOKEN_CHARS - 1] != "_":
        return None
    return rest[: -_TOKEN_CHARS - 1]


def keyed_hash(secret: str, api_key: str) -> str:
    return hmac.new(secret.encode(), api_key.encode(), hashlib.sha256).hexdigest()


def matches(secret: str, api_key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(keyed_hash(secret, api_key), stored_hash)
