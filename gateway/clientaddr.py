"""Who the client is: the socket peer, unless that peer is a proxy we were told to trust.

Behind a load balancer every connection comes from the balancer, so the client's address is
only in the headers the proxies add. Those headers are written by whoever sent the request, so
they are believed only as far as the chain of trusted proxies reaches (``TrustedProxies``,
``LEDGERDESK_TRUSTED_PROXIES``): the hops are walked from the right (the one our peer added)
and the first address that is not a trusted proxy is the client. Everything to its left was
written by the client itself and is never read.

``X-Forwarded-For`` is read when it is present, else RFC 7239 ``Forwarded`` (its ``for=``
values). X-Forwarded-For wins because it is the header load balancers append to; a proxy that
writes only ``Forwarded`` must drop any X-Forwarded-For a client sends (docs/operations.md).
A hop that is not an IP address (``unknown``, an obfuscated name, garbage) ends the walk with
the client unknown (None): never a string a client chose, and never the proxy itself, whose
address would put the client in the proxy's own buckets (and every such client in one). Only
the last ``MAX_HOPS`` hops are read: a client that writes more to the left cannot push the walk
off the end.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Where a request's client address is kept once computed (``client_of``): one answer per request.
ENVIRON_KEY = "ledgerdesk.client_address"
# No deployment has more trusted proxies in a row than this: hops further left are not read.
MAX_HOPS = 32


class TrustedProxies:
    """The networks whose connections may say who the client is (empty: nobody's may)."""

    def __init__(self, networks: Iterable[str] = ()):
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip()
        )

    @classmethod
    def parse(cls, raw: str) -> TrustedProxies:
        """Comma-separated CIDRs (or single addresses); ``ValueError`` names a bad one."""
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        for part in parts:
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"{part!r} is not an IP network") from None
        return cls(parts)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: Address) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)


def parse_address(text: str | None) -> Address | None:
    """An address as a peer or a proxy header gives it: bare, ``v4:port``, ``[v6]`` or
    ``[v6]:port``; an IPv4-mapped IPv6 address is its IPv4 one. None for anything else."""
    if not text:
        return None
    text = text.strip()
    if "%" in text:  # a zone id names an interface of the sender's, not an address of ours
        return None
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        text = inside
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted: TrustedProxies
) -> str | None:
    """The client's address (module docstring), or None when it is unknown: the peer has none
    (a socket that is not IP), or the trusted proxies' hops do not say (unreadable, or trusted
    further than ``MAX_HOPS`` reach)."""
    peer_address = parse_address(peer)
    if peer_address is None:
        return None
    if not trusted or peer_address not in trusted:
        return str(peer_address)
    hops = _hops(headers)
    if not hops:
        return str(peer_address)
    farthest = peer_address
    for hop in reversed(hops[-MAX_HOPS:]):
        address = parse_address(hop)
        if address is None:
            return None
        if address not in trusted:
            return str(address)
        farthest = address
    if len(hops) > MAX_HOPS:
        return None
    # Every hop is a trusted proxy: the request began at the farthest of them.
    return str(farthest)


def _hops(headers: Mapping[str, str]) -> list[str] | None:
    """The addresses the proxies recorded, client side first (an unreadable one as ""); None
    when there is no forwarding header."""
    forwarded_for = (headers.get("X-Forwarded-For") or "").strip()
    if forwarded_for:
        return [hop.strip() for hop in forwarded_for.split(",")]
    forwarded = (headers.get("Forwarded") or "").strip()
    if forwarded:
        return [_forwarded_for(element) for element in _split_outside_quotes(forwarded, ",")]
    return None


def _forwarded_for(element: str) -> str:
    """The ``for=`` of one element of an RFC 7239 ``Forwarded`` value; "" if it has none or does
    not parse. Element by element, so what a client wrote to the left cannot spoil the elements
    our proxies appended after it."""
    found = ""
    for pair in _split_outside_quotes(element, ";"):
        name, equals, raw = pair.strip().partition("=")
        if not equals:
            if pair.strip():
                return ""
            continue
        if name.strip().lower() != "for":
            continue
        raw = raw.strip()
        if raw.startswith('"'):
            if len(raw) < 2 or not raw.endswith('"'):
                return ""
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        found = raw
    return found


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def limit_key(address: str | None) -> str:
    """The key a client's per-address buckets are kept under: its address, or for IPv6 its /64
    (one subscriber's network: a client there has billions of addresses to rotate through)."""
    parsed = parse_address(address)
    if parsed is None:
        return "unknown"
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)
