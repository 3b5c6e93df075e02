"""What retention consumes: services announcing themselves, and their answers to commands."""

from kernel.topology import Subscription

REGISTRY = Subscription("retention.registry", ("*.service_announced",))
ANSWERS = Subscription("retention.answers", ("*.privacy_answered",))

# The clocks: a cancellation starts a tenant's grace, a reactivation stops it.
TENANTS = Subscription(
    "retention.tenants", ("accounts.tenant_cancelled", "accounts.tenant_reactivated")
)

# A closed ticket's retention period starts when it closes.
TICKETS = Subscription("retention.tickets", ("tickets.ticket_closed",))

SUBSCRIPTIONS = [REGISTRY, ANSWERS, TENANTS, TICKETS]
