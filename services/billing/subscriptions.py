"""What billing consumes: new tenants (an account on the default plan), a tenant's new region
(after a move between region cells: the tax rate from then on) and agents (seats)."""

from kernel import privacy
from kernel.topology import Subscription

ACCOUNTS = Subscription(
    "billing.accounts",
    (
        "accounts.tenant_created",
        "accounts.tenant_region_changed",
        "accounts.agent_created",
        "accounts.agent_deactivated",
    ),
)

PRIVACY = privacy.subscription("billing")

SUBSCRIPTIONS = [PRIVACY, ACCOUNTS]
