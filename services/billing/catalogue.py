"""The plan catalogue, tax rates and legal hold: configuration, not data, so every replica agrees.

They are settings (``LEDGERDESK_BILLING_PLANS``, ``LEDGERDESK_TAX_RATES``,
``LEDGERDESK_LEGAL_HOLD_YEARS``, declared in ``kernel.config``), read once with the others as
the process starts and handed to the handlers: nothing here reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from kernel.config import Settings
from kernel.config_values import Plan

__all__ = ["DEFAULT_PLAN", "LEGAL_BASIS", "Catalogue", "Plan"]

DEFAULT_PLAN = "standard"
LEGAL_BASIS = "tax and accounting law: invoices and payment records are kept for {years} years"


@dataclass(frozen=True)
class Catalogue:
    plans: dict[str, Plan]
    tax_rates: dict[str, Decimal]
    # Invoices and payment records are kept this long (tax and accounting law), then erased.
    legal_hold_years: int

    @classmethod
    def of(cls, settings: Settings) -> Catalogue:
        return cls(
            plans={plan.name: plan for plan in settings.billing_plans},
            tax_rates=dict(settings.tax_rates),
            legal_hold_years=settings.legal_hold_years,
        )

    def tax_rate(self, region: str) -> Decimal:
        """A region without a rate is taxed at none."""
        return self.tax_rates.get(region, Decimal(0))

    @property
    def legal_basis(self) -> str:
        return LEGAL_BASIS.format(years=self.legal_hold_years)
