"""What billing consumes: new tenants (an account on the default plan) and agents (seats)."""

from kernel import privacy
from kernel.topology import Subscription

ACCOUNTS = Subscription(
    "billing.accounts",
    ("accounts.tenant_created", "accounts.agent_created", "accounts.agent_deactivated"),
)

PRIVACY = privacy.subscription("billing")

SUBSCRIPTIONS = [PRIVACY, ACCOUNTS]
