"""The plan catalogue and tax rates: configuration, not data, so every replica agrees.

``LEDGERDESK_BILLING_PLANS`` may replace the plans with JSON such as
``[{"name": "standard", "price_per_agent": 1500, "currency": "GBP"}]`` (prices in minor units);
``LEDGERDESK_TAX_RATES`` the tax rate per region as ``uk:0.20,in:0.18,sg:0.09``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from decimal import Decimal

from kernel.config import ConfigurationError


@dataclass(frozen=True)
class Plan:
    name: str
    price_per_agent: int  # per agent per month, in minor units (pence, paise, cents)
    currency: str

    def view(self) -> dict:
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
DEFAULT_TAX_RATES = {"uk": Decimal("0.20"), "in": Decimal("0.18"), "sg": Decimal("0.09")}
DEFAULT_PLAN = "standard"
# Invoices and payment records are kept this long (tax and accounting law), then erased.
LEGAL_HOLD_YEARS = int(os.environ.get("LEDGERDESK_LEGAL_HOLD_YEARS", "10"))
LEGAL_BASIS = "tax and accounting law: invoices and payment records are kept for {years} years"


def plans() -> dict[str, Plan]:
    raw = os.environ.get("LEDGERDESK_BILLING_PLANS")
    if not raw:
        return {p.name: p for p in DEFAULT_PLANS}
    try:
        return {
            p["name"]: Plan(str(p["name"]), int(p["price_per_agent"]), str(p["currency"]))
            for p in json.loads(raw)
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError("LEDGERDESK_BILLING_PLANS is not a list of plans") from exc


def tax_rates() -> dict[str, Decimal]:
    raw = os.environ.get("LEDGERDESK_TAX_RATES")
    if not raw:
        return dict(DEFAULT_TAX_RATES)
    rates = {}
    for item in raw.split(","):
        region, _, rate = item.partition(":")
        try:
            rates[region.strip()] = Decimal(rate)
        except ArithmeticError as exc:
            raise ConfigurationError("LEDGERDESK_TAX_RATES: region:rate,...") from exc
    return rates
