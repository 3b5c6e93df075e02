"""The client's address behind proxies (gateway.clientaddr): forwarding headers are believed only
as far as the chain of trusted proxies reaches, and never yield anything but an address."""

from __future__ import annotations

import pytest

from gateway.clientaddr import TrustedProxies, client_address, limit_key, parse_address
from kernel.config import ConfigurationError, Settings

BALANCERS = TrustedProxies(["10.0.0.0/8", "2001:db8:ffff::/48"])


def of(peer: str | None, **headers: str) -> str | None:
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return client_address(peer, named, BALANCERS)


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_headers():
    assert (
        client_address("198.51.100.1", {"X-Forwarded-For": "203.0.113.9"}, TrustedProxies())
        == "198.51.100.1"
    )


def test_an_untrusted_peer_sending_forwarding_headers_is_recorded_as_itself():
    assert of("198.51.100.1", X_Forwarded_For="203.0.113.9") == "198.51.100.1"
    assert of("198.51.100.1", Forwarded="for=203.0.113.9") == "198.51.100.1"


def test_a_trusted_peer_names_the_client_it_forwards_for():
    assert of("10.1.2.3", X_Forwarded_For="203.0.113.9") == "203.0.113.9"
    assert of("10.1.2.3", Forwarded="for=203.0.113.9;proto=https") == "203.0.113.9"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right():
    # client 203.0.113.9 -> balancer 10.0.0.5 -> ingress 10.9.9.9 (the peer)
    assert of("10.9.9.9", X_Forwarded_For="203.0.113.9, 10.0.0.5") == "203.0.113.9"
    assert of("10.9.9.9", Forwarded="for=203.0.113.9, for=10.0.0.5") == "203.0.113.9"


def test_entries_a_client_wrote_to_the_left_of_its_own_address_are_ignored():
    spoofed = "1.1.1.1, 127.0.0.1, 10.0.0.7, 203.0.113.9"
    assert of("10.9.9.9", X_Forwarded_For=spoofed) == "203.0.113.9"
    assert of("10.9.9.9", Forwarded='for=1.1.1.1, for="10.0.0.7", for=203.0.113.9') == (
        "203.0.113.9"
    )


@pytest.mark.parametrize(
    "value",
    [
        "not-an-ip",
        "203.0.113.9, bogus",
        "203.0.113.9,",
        "<script>",
        "203.0.113.9:port",
        "fe80::1%eth0",
        "[2001:db8::1",
        "999.1.1.1",
        ", ".join(["10.0.0.1"] * 40),
    ],
)
def test_a_malformed_forwarded_for_leaves_the_client_unknown_not_the_proxy(value):
    # Never the proxy: its address would put the client in the proxy's own buckets.
    assert of("10.1.2.3", X_Forwarded_For=value) is None


@pytest.mark.parametrize(
    "value",
    [
        "for=unknown",
        "for=_hidden",
        "proto=https",
        'for="203.0.113.9',
        "for=203.0.113.9, by=10.0.0.1",
        "garbage",
    ],
)
def test_a_malformed_forwarded_leaves_the_client_unknown_not_the_proxy(value):
    assert of("10.1.2.3", Forwarded=value) is None


@pytest.mark.parametrize(
    "headers",
    [
        # More hops written to the left than any chain of proxies has: only the last are read.
        {"X_Forwarded_For": ", ".join(["198.51.100.7"] * 40 + ["203.0.113.9"])},
        {"X_Forwarded_For": ", ".join(["garbage"] * 40 + ["203.0.113.9"])},
        # A client's unreadable Forwarded element spoils nothing the proxy appended after it.
        {"Forwarded": "garbage;;, for=203.0.113.9"},
        {"Forwarded": "for=_hidden, for=203.0.113.9"},
    ],
)
def test_what_a_client_writes_to_the_left_cannot_hide_it_behind_the_proxy(headers):
    assert of("10.1.2.3", **headers) == "203.0.113.9"


def test_x_forwarded_for_wins_over_forwarded():
    both = {"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=198.51.100.77"}
    assert client_address("10.1.2.3", both, BALANCERS) == "203.0.113.9"


def test_ports_brackets_and_mapped_addresses_are_read_as_addresses():
    assert of("10.1.2.3", X_Forwarded_For="203.0.113.9:51234") == "203.0.113.9"
    assert of("10.1.2.3", X_Forwarded_For="[2001:db8::7]:443") == "2001:db8::7"
    assert of("10.1.2.3", Forwarded='for="[2001:db8::7]:4711"') == "2001:db8::7"
    assert of("::ffff:10.1.2.3", X_Forwarded_For="203.0.113.9") == "203.0.113.9"
    assert of("2001:db8:ffff::1", X_Forwarded_For="203.0.113.9") == "203.0.113.9"


def test_when_every_hop_is_trusted_the_farthest_is_the_client():
    assert of("10.9.9.9", X_Forwarded_For="10.0.0.1, 10.0.0.2") == "10.0.0.1"


def test_a_peer_that_is_not_an_address_has_none():
    assert of(None, X_Forwarded_For="203.0.113.9") is None
    assert of("", X_Forwarded_For="203.0.113.9") is None


def test_a_trusted_peer_without_headers_is_the_client():
    assert of("10.1.2.3") == "10.1.2.3"


def test_parse_address_refuses_what_is_not_an_address():
    assert parse_address("203.0.113.9") is not None
    for text in ("unknown", "203.0.113.9:", "[::1]x", "1.2.3", "", None):
        assert parse_address(text) is None, text


def test_ipv6_clients_share_their_64s_buckets():
    assert limit_key("2001:db8:1:2:aaaa::1") == limit_key("2001:db8:1:2:bbbb::2")
    assert limit_key("2001:db8:1:3::1") != limit_key("2001:db8:1:2::1")
    assert limit_key("203.0.113.9") == "203.0.113.9"
    assert limit_key(None) == "unknown"


def test_trusted_proxies_come_from_the_settings_and_a_bad_one_is_refused():
    settings = Settings.from_env({"LEDGERDESK_TRUSTED_PROXIES": " 10.0.0.0/8, 192.0.2.1 "})
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.0.2.1/32")
    assert Settings.from_env({}).trusted_proxies == ()
    with pytest.raises(ConfigurationError, match="LEDGERDESK_TRUSTED_PROXIES"):
        Settings.from_env({"LEDGERDESK_TRUSTED_PROXIES": "10.0.0.0/8,example.com"})
    with pytest.raises(ValueError, match="not an IP network"):
        TrustedProxies.parse("10.0.0.0/33")
