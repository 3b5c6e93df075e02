"""The audit ledger's queue: every event of every service, so a new service is covered unchanged."""

from kernel import privacy
from kernel.topology import Subscription

LEDGER = Subscription("audit.ledger", ("#",))

PRIVACY = privacy.subscription("audit")

SUBSCRIPTIONS = [PRIVACY, LEDGER]
