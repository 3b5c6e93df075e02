"""Webhook signatures: HMAC-SHA256 over ``timestamp + "." + body``, as a receiver checks it."""

from __future__ import annotations

import hashlib
import hmac

from gateway.webhooks import signing

SECRET = "whsec_test-secret"
BODY = b'{"data":{"ticket_id":"t-1"},"id":"e-1","type":"ticket.created"}'
NOW = 1_767_225_600


def test_the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_body():
    # Recomputed here from the definition, as a receiver in any language would.
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signing.signature(SECRET, NOW, BODY) == expected
    assert signing.signature_header(SECRET, NOW, BODY) == f"t={NOW},v1={expected}"


def test_a_receiver_accepts_its_own_signature_within_the_tolerance():
    header = signing.signature_header(SECRET, NOW, BODY)
    assert signing.verify(SECRET, header, BODY, now=NOW)
    assert signing.verify(SECRET, header, BODY, now=NOW + 299)
    assert signing.verify(SECRET, header, BODY, now=NOW - 299)


def test_a_changed_body_another_secret_or_an_old_timestamp_is_refused():
    header = signing.signature_header(SECRET, NOW, BODY)
    assert not signing.verify(SECRET, header, BODY + b" ", now=NOW)
    assert not signing.verify("whsec_other", header, BODY, now=NOW)
    # A replay of a captured request, later than the tolerance.
    assert not signing.verify(SECRET, header, BODY, now=NOW + 301)
    # The timestamp is signed: moving it forward breaks the signature.
    moved = header.replace(f"t={NOW}", f"t={NOW + 1000}")
    assert not signing.verify(SECRET, moved, BODY, now=NOW + 1000)


def test_malformed_headers_are_refused_not_errors():
    for header in (
        None,
        "",
        "v1=abc",
        f"t={NOW}",
        f"t=soon,v1={signing.signature(SECRET, NOW, BODY)}",
        f"t={NOW},v1=é",
    ):
        assert not signing.verify(SECRET, header, BODY, now=NOW), header


def test_any_of_several_v1_signatures_may_match():
    good = signing.signature(SECRET, NOW, BODY)
    header = f"t={NOW},v1={'0' * 64},v1={good}"
    assert signing.verify(SECRET, header, BODY, now=NOW)


def test_after_a_rotation_the_header_signs_under_the_new_secret_then_the_previous():
    previous = "whsec_previous"
    header = signing.signature_header(SECRET, NOW, BODY, previous)
    new, old = (signing.signature(s, NOW, BODY) for s in (SECRET, previous))
    assert header == f"t={NOW},v1={new},v1={old}"
    assert signing.verify(SECRET, header, BODY, now=NOW)
    assert signing.verify(previous, header, BODY, now=NOW)
    assert not signing.verify("whsec_another", header, BODY, now=NOW)


def test_secrets_are_random_and_recognisable():
    made = {signing.new_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(s.startswith("whsec_") and len(s) >= 6 + 43 for s in made)
