"""The gateway's consumer queue: the privacy commands, for its stored responses."""

from kernel import privacy
from kernel.topology import Subscription

PRIVACY = privacy.subscription("gateway")

SUBSCRIPTIONS: list[Subscription] = [PRIVACY]
