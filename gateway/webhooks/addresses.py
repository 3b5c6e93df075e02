"""Where a webhook may go: the URL's form, and the addresses its host may be reached at.

A tenant's endpoint is a URL the platform will POST to from inside its own network, so it
could be pointed at what only that network reaches: a cloud's metadata service, a database, an
admin port on loopback (server-side request forgery). So:

- a URL is ``https://`` (``http://`` only where the operator allows it for development and
  tests, ``LEDGERDESK_WEBHOOK_ALLOW_HTTP``), with a host, without credentials or a fragment;
- every address its host resolves to must be public: a loopback, private, link-local,
  multicast, reserved, unspecified or otherwise not globally routable address (IPv4 inside
  IPv6 included) is refused, unless the operator allows them (``LEDGERDESK_WEBHOOK_ALLOW_PRIVATE``);
- the check is made at registration **and at every delivery**, and the delivery connects to an
  address that passed that very check (``Destination.addresses``), never resolving the name
  again: a name that resolved to a public address at registration and to loopback later (DNS
  rebinding) is refused, and cannot slip in between the check and the connection either.

A refusal's reason names the kind of address, never the URL: a URL's query can carry a token.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import eventlet

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to: ``system_resolver``, or a test's own.
Resolver = Callable[[str, int], Sequence[str]]

MAX_URL_CHARS = 2048
# The most a name's resolution may take at registration (a delivery's is within its timeout).
RESOLVE_SECONDS = 5.0
# What a path or query keeps as it is (RFC 3986's reserved and unreserved characters, and %).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~?"
# RFC 6052's well-known NAT64 prefix: its last 32 bits are an IPv4 address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(ValueError):
    """A URL or an address a webhook may not use; the message says why, without the URL."""


@dataclass(frozen=True)
class Target:
    """A webhook URL, taken apart: what a connection and its request line need."""

    scheme: str
    host: str  # lower case, IDNA-encoded, IPv6 without brackets
    port: int
    path: str  # path and query, as sent in the request line

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


@dataclass(frozen=True)
class Policy:
    """What the operator allows (``LEDGERDESK_WEBHOOK_ALLOW_HTTP``, ``_ALLOW_PRIVATE``)."""

    allow_http: bool = False
    allow_private: bool = False

    @property
    def schemes(self) -> tuple[str, ...]:
        return ("https", "http") if self.allow_http else ("https",)


def parse_url(url: str, policy: Policy) -> Target:
    """The URL's parts, or ``Refused`` saying what is wrong with its form."""
    if not isinstance(url, str) or not url:
        raise Refused("a URL is required")
    if len(url) > MAX_URL_CHARS:
        raise Refused(f"a URL may be at most {MAX_URL_CHARS} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise Refused("a URL may not contain spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused("not a URL") from None
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        allowed = " or ".join(f"{s}://" for s in policy.schemes)
        raise Refused(f"the URL must start with {allowed}")
    if parts.username is not None or parts.password is not None:
        raise Refused("a URL may not carry credentials: the signature authenticates the sender")
    if parts.fragment:
        raise Refused("a URL may not have a fragment")
    if not parts.hostname:
        raise Refused("the URL has no host")
    host = _host(parts.hostname)
    # The request line is ASCII: anything else is percent-encoded, what is encoded stays so.
    path = urllib.parse.quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + urllib.parse.quote(parts.query, safe=_PATH_SAFE)
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path)


def _host(hostname: str) -> str:
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    try:
        return hostname.encode("idna").decode("ascii").lower().rstrip(".")
    except UnicodeError:
        raise Refused("the URL's host is not a valid name") from None


def refusal(address: IPAddress) -> str | None:
    """Why a webhook may not connect to ``address`` (the kind of address), or None: it is a
    public one. An IPv4 address inside an IPv6 one (mapped, 6to4, Teredo, NAT64) counts as
    itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return refusal(address.ipv4_mapped)  # a connection to it goes to the IPv4 address
        for inner in _embedded(address):
            reason = refusal(inner)
            if reason is not None:
                return reason
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private or getattr(address, "is_site_local", False):
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not public"
    return None


def _embedded(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [address.sixtofour]
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system's resolver gives for ``host`` (TCP), in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Destination:
    """A target and the addresses it may be reached at: each one checked."""

    target: Target
    addresses: tuple[str, ...]


def check(
    target: Target,
    policy: Policy,
    resolver: Resolver = system_resolver,
    seconds: float = RESOLVE_SECONDS,
) -> Destination:
    """Resolve the target's host and check every address it has: one refused address refuses
    the target (a connection could go to any of them). ``Refused`` for a name that does not
    resolve, or not within ``seconds``."""
    try:
        if _literal(target.host):
            found = [target.host]  # an address is itself: no resolver is asked
        else:
            with eventlet.Timeout(seconds):
                found = list(resolver(target.host, target.port))
    except eventlet.Timeout:
        raise Refused("the URL's host did not resolve in time") from None
    except (OSError, UnicodeError):
        raise Refused("the URL's host does not resolve") from None
    addresses: list[str] = []
    for text in found:
        try:
            # A scoped IPv6 address (fe80::1%eth0) is link-local whatever its scope.
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise Refused("the URL's host resolves to something that is not an address") from None
        reason = refusal(address)
        if reason is not None and not policy.allow_private:
            raise Refused(f"the URL's host resolves to a {reason} address")
        if str(address) not in addresses:
            addresses.append(str(address))
    if not addresses:
        raise Refused("the URL's host does not resolve")
    return Destination(target, tuple(addresses))
