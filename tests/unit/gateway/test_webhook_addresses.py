"""Where a webhook may go: the URL's form and the addresses its host resolves to (no server-side
request forgery). A resolver given here stands in for DNS."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from gateway.webhooks.addresses import Policy, Refused, Target, check, parse_url, refusal

STRICT = Policy()
DEVELOPMENT = Policy(allow_http=True, allow_private=True)
PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def resolving(*answers: str):
    def resolve(host: str, port: int) -> list[str]:
        return list(answers)

    return resolve


def test_an_https_url_is_taken_apart():
    target = parse_url("https://Hooks.Example.COM/in/ledgerdesk?token=x", STRICT)
    assert target == Target("https", "hooks.example.com", 443, "/in/ledgerdesk?token=x")
    assert target.tls
    assert parse_url("https://example.com", STRICT).path == "/"
    assert parse_url("https://example.com:8443/x", STRICT).port == 8443
    assert parse_url("https://[2606:2800::1]/x", STRICT).host == "2606:2800::1"
    assert parse_url("https://bücher.example/", STRICT).host == "xn--bcher-kva.example"
    # The request line is ASCII: the rest is percent-encoded, what was encoded stays so.
    assert parse_url("https://example.com/café?q=ü&r=%41", STRICT).path == (
        "/caf%C3%A9?q=%C3%BC&r=%41"
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/", "must start with https://"),
        ("ftp://example.com/", "must start with https://"),
        ("example.com/hook", "must start with https://"),
        ("https://user:pass@example.com/", "credentials"),
        ("https://example.com/#frag", "fragment"),
        ("https:///path", "no host"),
        ("https://example.com:99999/", "not a URL"),
        ("https://exa mple.com/", "spaces or control characters"),
        ("https://example.com/\x00", "spaces or control characters"),
        ("https://example.com/" + "a" * 2048, "at most 2048"),
        ("", "required"),
    ],
)
def test_urls_of_the_wrong_form_are_refused_saying_why(url: str, reason: str):
    with pytest.raises(Refused, match=reason):
        parse_url(url, STRICT)


def test_plain_http_only_where_the_operator_allows_it():
    with pytest.raises(Refused, match="https://"):
        parse_url("http://example.com/", STRICT)
    assert parse_url("http://example.com/", Policy(allow_http=True)).port == 80


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # a cloud's metadata service
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "private"),
        ("255.255.255.255", "private"),
        ("100.64.0.1", "not public"),  # carrier-grade NAT
        ("192.0.2.1", "private"),  # documentation
        # IPv4 inside IPv6 counts as itself.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("::7f00:1", "reserved"),
    ],
)
def test_non_public_addresses_are_refused_by_kind(address: str, kind: str):
    assert refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", [PUBLIC_V4, "1.1.1.1", PUBLIC_V6, "::ffff:93.184.215.14"])
def test_public_addresses_pass(address: str):
    assert refusal(ipaddress.ip_address(address)) is None


def test_a_host_is_allowed_only_if_every_address_it_resolves_to_is_public():
    target = parse_url("https://hooks.example.com/in", STRICT)
    destination = check(target, STRICT, resolving(PUBLIC_V4, PUBLIC_V6, PUBLIC_V4))
    assert destination.addresses == (PUBLIC_V4, PUBLIC_V6)  # each once, in the resolver's order
    # One private address among public ones: a connection could go to it.
    with pytest.raises(Refused, match="resolves to a private address"):
        check(target, STRICT, resolving(PUBLIC_V4, "10.0.0.7"))
    with pytest.raises(Refused, match="resolves to a loopback address"):
        check(target, STRICT, resolving("127.0.0.1"))
    with pytest.raises(Refused, match="link-local"):
        check(target, STRICT, resolving("fe80::1%eth0"))


def test_literal_addresses_are_checked_like_names():
    for url in ("https://127.0.0.1/", "https://[::1]:8443/", "https://169.254.169.254/latest"):
        with pytest.raises(Refused, match="resolves to a"):
            check(parse_url(url, STRICT), STRICT)  # the system's resolver: a literal is itself


def test_localhost_is_refused_through_the_systems_resolver():
    with pytest.raises(Refused, match="loopback"):
        check(parse_url("https://localhost:9/hook", STRICT), STRICT)


def test_the_operator_may_allow_private_addresses():
    target = parse_url("http://localhost:9/hook", DEVELOPMENT)
    assert "127.0.0.1" in check(target, DEVELOPMENT).addresses


def test_a_name_that_does_not_resolve_is_refused():
    def fails(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(Refused, match="does not resolve"):
        check(parse_url("https://nowhere.invalid/", STRICT), STRICT, fails)
    with pytest.raises(Refused, match="does not resolve"):
        check(parse_url("https://empty.example/", STRICT), STRICT, resolving())


def test_a_resolution_that_hangs_is_refused_in_time():
    import eventlet

    def hangs(host: str, port: int) -> list[str]:
        eventlet.sleep(5)
        return [PUBLIC_V4]

    with pytest.raises(Refused, match="in time"):
        check(parse_url("https://slow.example/", STRICT), STRICT, hangs, seconds=0.05)


def test_a_refusal_never_quotes_the_url():
    secret_query = "https://127.0.0.1/hook?token=s3cr3t-value"
    with pytest.raises(Refused) as refused:
        check(parse_url(secret_query, STRICT), STRICT)
    assert "s3cr3t" not in str(refused.value) and "127.0.0.1" not in str(refused.value)
