"""The gateway's consumer queues: the privacy commands, for its stored responses and its
credentials; accounts' news of credentials (``gateway.credentials``); the events its tenants'
webhooks are told of (``gateway.webhooks``)."""

from gateway.webhooks.catalogue import EVENTS
from kernel import privacy
from kernel.topology import Subscription

PRIVACY = privacy.subscription("gateway")

# Published copies carry ids and states only: a key's hash is fetched from accounts.
CREDENTIALS = Subscription(
    "gateway.credentials",
    (
        "accounts.api_key_issued",
        "accounts.api_key_revoked",
        "accounts.agent_deactivated",
        "accounts.tenant_cancelled",
        "accounts.tenant_reactivated",
    ),
)

# Tickets' and retention's published events that a webhook event is built from (ids and states).
WEBHOOKS = Subscription("gateway.webhooks", tuple(event.routing_key for event in EVENTS))

SUBSCRIPTIONS: list[Subscription] = [PRIVACY, CREDENTIALS, WEBHOOKS]
