"""How each setting's text becomes a value and back (``kernel.config`` declares which setting
uses which): parsers, their inverses, and the values that are more than a word (billing plans,
tax rates, master keys, networks, the audit ledger's public keys)."""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kernel.signed_note import NoteError, PublicKey, parse_key_list

ENVIRONMENTS = frozenset({"development", "test", "production"})


class ConfigurationError(Exception):
    """A setting is missing or malformed; the message names the variable, never a secret's value."""


def masked_url(url: str) -> str:
    """A URL or DSN with its password replaced, for a repr."""
    if "://" not in url:  # a libpq "key=value" DSN
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# --- how a value is read from its variable and written back -----------------------------------
#
# A parser takes the variable's name (for its messages, which never repeat a secret) and its
# text, and the settings read before it (the key list needs the ledger's origin); a renderer is
# its inverse, so that ``Settings.from_env(settings.to_env()) == settings``.

Parser = Callable[[str, str, Mapping[str, Any]], Any]


def text(variable: str, raw: str, read: Mapping[str, Any]) -> str:
    return raw


def stripped(variable: str, raw: str, read: Mapping[str, Any]) -> str:
    return raw.strip()


def lowered(variable: str, raw: str, read: Mapping[str, Any]) -> str:
    return raw.strip().lower()


def environment(variable: str, raw: str, read: Mapping[str, Any]) -> str:
    environment = raw.strip().lower()
    # A closed set: "prod" or "produciton" would otherwise run on every development secret.
    if environment not in ENVIRONMENTS:
        raise ConfigurationError(f"{variable} must be one of " + ", ".join(sorted(ENVIRONMENTS)))
    return environment


def number(kind: type[int] | type[float]) -> Parser:
    """A positive, finite number of ``kind``."""

    def parse(variable: str, raw: str, read: Mapping[str, Any]) -> int | float:
        try:
            value = kind(raw)
        except ValueError as exc:
            raise ConfigurationError(f"{variable} must be a number, not {raw!r}") from exc
        if not math.isfinite(value) or value <= 0:
            raise ConfigurationError(f"{variable} must be positive")
        return value

    return parse


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


def flag(variable: str, raw: str, read: Mapping[str, Any]) -> bool:
    """A switch: ``true``/``false`` (also 1/0, yes/no, on/off); anything else is refused rather
    than read as off (a misspelt "ture" must not quietly leave a guard in place or lift it)."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{variable} must be true or false, not {raw!r}")


def render_flag(value: bool) -> str:
    return "true" if value else "false"


def port(variable: str, raw: str, read: Mapping[str, Any]) -> int:
    raw = raw.strip() or "0"
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigurationError(f"{variable} must be a TCP port, or 0 for any")
    return int(raw)


def names(variable: str, raw: str, read: Mapping[str, Any]) -> tuple[str, ...]:
    """Comma-separated, trimmed, empty entries dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def joined(value: tuple[str, ...]) -> str:
    return ",".join(value)


def cells(variable: str, raw: str, read: Mapping[str, Any]) -> dict[str, str]:
    """``region=http://host:port,...``: each region's cell (its gateway's URL), in order; the
    first is the default cell."""
    return _cell_urls(variable, raw, ("http", "https"))


def mail_cells(variable: str, raw: str, read: Mapping[str, Any]) -> dict[str, str]:
    """``region=smtp://host:port,...`` (or ``lmtp://``): each region's inbound mail listener."""
    return _cell_urls(variable, raw, ("smtp", "lmtp"))


def _cell_urls(variable: str, raw: str, schemes: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        region, sep, url = (text.strip() for text in item.partition("="))
        if not sep or not region or not url.startswith(tuple(f"{s}://" for s in schemes)):
            raise ConfigurationError(f"{variable}: region={schemes[0]}://host:port,...")
        if region in found:
            raise ConfigurationError(f"{variable}: region {region} named twice")
        found[region] = url.rstrip("/")
    return found


def cell_prefixes(variable: str, raw: str, read: Mapping[str, Any]) -> dict[str, str]:
    """``region=prefix,...``: each region's cell's database prefix."""
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        region, sep, prefix = (text.strip() for text in item.partition("="))
        if not sep or not region or not re.fullmatch(r"[A-Za-z0-9_]+", prefix):
            raise ConfigurationError(f"{variable}: region=prefix,... (letters, digits, _)")
        if region in found:
            raise ConfigurationError(f"{variable}: region {region} named twice")
        found[region] = prefix
    return found


def render_cells(value: Mapping[str, str]) -> str:
    return ",".join(f"{region}={url}" for region, url in value.items())


def parse_master_keys(raw: str) -> dict[str, bytes]:
    """``kid:base64[,kid:base64...]``: the first key wraps new keys, the others still unwrap."""
    keys: dict[str, bytes] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        kid, sep, b64 = part.partition(":")
        if not sep or not kid:
            raise ConfigurationError("LEDGERDESK_MASTER_KEY entries must look like 'key_id:base64'")
        try:
            key = base64.b64decode(b64, validate=True)
        except ValueError:
            # Not chained: the decoder's error could quote the key material.
            raise ConfigurationError(f"LEDGERDESK_MASTER_KEY {kid!r} is not base64") from None
        if len(key) != 32:
            raise ConfigurationError(f"LEDGERDESK_MASTER_KEY {kid!r} must be 32 bytes")
        keys[kid] = key
    if not keys:
        raise ConfigurationError("LEDGERDESK_MASTER_KEY is empty")
    return keys


def master_keys(variable: str, raw: str, read: Mapping[str, Any]) -> dict[str, bytes]:
    return parse_master_keys(raw)


def render_master_keys(keys: dict[str, bytes]) -> str:
    return ",".join(f"{kid}:{base64.b64encode(key).decode()}" for kid, key in keys.items())


def cell_master_keys(
    variable: str, raw: str, read: Mapping[str, Any]
) -> dict[str, dict[str, bytes]]:
    """``region=kid:base64[,kid:base64...];region=...``: a cell's own master keys, in place of
    ``LEDGERDESK_MASTER_KEY`` for that cell (``services.platform.cell_settings``)."""
    found: dict[str, dict[str, bytes]] = {}
    for item in filter(None, (part.strip() for part in raw.split(";"))):
        region, sep, keys = (text.strip() for text in item.partition("="))
        if not sep or not region:
            raise ConfigurationError(f"{variable}: region=kid:base64[,kid:base64...];...")
        if region in found:
            raise ConfigurationError(f"{variable}: region {region} named twice")
        found[region] = parse_master_keys(keys)
    return found


def render_cell_master_keys(value: Mapping[str, dict[str, bytes]]) -> str:
    return ";".join(f"{region}={render_master_keys(keys)}" for region, keys in value.items())


def networks(variable: str, raw: str, read: Mapping[str, Any]) -> tuple[str, ...]:
    """Comma-separated CIDRs (a bare address is its /32 or /128), normalised."""
    networks = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            networks.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ConfigurationError(f"{variable}: {part!r} is not an IP network (CIDR)") from None
    return tuple(networks)


def audit_public_keys(
    variable: str, raw: str, read: Mapping[str, Any]
) -> tuple[PublicKey, ...] | None:
    """None when unset (development derives the key from the signing seed); else a JSON array
    of {public_key, valid_from, valid_until} (``kernel.signed_note.parse_key_list``), whose
    verifier keys must name this ledger's origin."""
    if not raw.strip():
        return None
    origin = read["audit_log_origin"] or default_audit_origin(read["database_prefix"])
    try:
        return parse_key_list(raw, origin)
    except NoteError as exc:
        raise ConfigurationError(f"{variable}: {exc}") from exc


def render_audit_public_keys(keys: tuple[PublicKey, ...] | None) -> str:
    return "" if keys is None else json.dumps([key.as_json() for key in keys])


@dataclass(frozen=True)
class Plan:
    """A billing plan: its price per agent per month, in minor units (pence, paise, cents)."""

    name: str
    price_per_agent: int
    currency: str

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "price_per_agent": self.price_per_agent,
            "currency": self.currency,
        }


DEFAULT_PLANS = (
    Plan("standard", 1500, "GBP"),
    Plan("team", 2900, "GBP"),
    Plan("enterprise", 4900, "GBP"),
)


def plans(variable: str, raw: str, read: Mapping[str, Any]) -> tuple[Plan, ...]:
    if not raw:
        return DEFAULT_PLANS
    try:
        return tuple(
            Plan(str(p["name"]), int(p["price_per_agent"]), str(p["currency"]))
            for p in json.loads(raw)
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"{variable} is not a list of plans") from exc


def render_plans(plans: tuple[Plan, ...]) -> str:
    return json.dumps([plan.view() for plan in plans])


DEFAULT_TAX_RATES = {"uk": Decimal("0.20"), "in": Decimal("0.18"), "sg": Decimal("0.09")}


def tax_rates(variable: str, raw: str, read: Mapping[str, Any]) -> dict[str, Decimal]:
    if not raw:
        return dict(DEFAULT_TAX_RATES)
    rates = {}
    for item in raw.split(","):
        region, _, rate = item.partition(":")
        try:
            rates[region.strip()] = Decimal(rate)
        except ArithmeticError as exc:
            raise ConfigurationError(f"{variable}: region:rate,...") from exc
    return rates


def render_tax_rates(rates: dict[str, Decimal]) -> str:
    return ",".join(f"{region}:{rate}" for region, rate in rates.items())


def default_audit_origin(database_prefix: str) -> str:
    return f"ledgerdesk.audit/{database_prefix}"
