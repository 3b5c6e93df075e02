"""A service stopped while its queue consumer is still connecting stops cleanly."""

from nameko.messaging import QueueConsumer

import kernel.nameko_adapters  # noqa: F401 (it mends QueueConsumer on import)


def test_every_provider_may_unregister_before_the_consumers_are_ready():
    consumer = QueueConsumer()
    assert not consumer._consumers_ready.ready()
    for provider in (object(), object(), object()):
        consumer.unregister_provider(provider)  # nameko alone raises on the second
    assert consumer._last_provider_unregistered.ready()
