"""What tickets consumes: accounts' news of agents and contacts, for its directory."""

from kernel import privacy
from kernel.topology import Subscription

ACCOUNTS = Subscription(
    "tickets.accounts",
    ("accounts.agent_created", "accounts.agent_deactivated", "accounts.contact_created"),
)

PRIVACY = privacy.subscription("tickets")

SUBSCRIPTIONS = [PRIVACY, ACCOUNTS]
