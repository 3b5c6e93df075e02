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


def generate() -> str:
    return PREFIX + secrets.token_urlsafe(32)  # 256 bits


def keyed_hash(secret: str, api_key: str) -> str:
    return hmac.new(secret.encode(), api_key.encode(), hashlib.sha256).hexdigest()


def matches(secret: str, api_key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(keyed_hash(secret, api_key), stored_hash)
