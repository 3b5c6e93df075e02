"""What retention consumes: services announcing themselves, and their answers to commands."""

from kernel.topology import Subscription

REGISTRY = Subscription("retention.registry", ("*.service_announced",))
ANSWERS = Subscription("retention.answers", ("*.privacy_answered",))

SUBSCRIPTIONS = [REGISTRY, ANSWERS]
