"""What billing shows the rest of the platform: the only module of ``services.billing`` that
the gateway and other services import (``make lint`` holds them to it; pyproject.toml,
``[tool.importlinter]``).

The command schemas are the HTTP API's requests as well (the gateway validates with them, then
billing again); the subscriptions are the queues it consumes, which the gateway's dead-letter
endpoints are limited to. Everything else in the package is billing's own.
"""

from services.billing.commands import AddPaymentMethodV1, ChangePlanV1, SetBillingAddressV1
from services.billing.subscriptions import SUBSCRIPTIONS

__all__ = ["SUBSCRIPTIONS", "AddPaymentMethodV1", "ChangePlanV1", "SetBillingAddressV1"]
