"""A service stopped while its queue consumer is still connecting stops cleanly."""

import subprocess
import sys

from nameko.messaging import QueueConsumer

from kernel.nameko_adapters import patches


def test_every_provider_may_unregister_before_the_consumers_are_ready():
    patches.install()  # the test kit has done so already; repeating it changes nothing
    consumer = QueueConsumer()
    assert not consumer._consumers_ready.ready()
    for provider in (object(), object(), object()):
        consumer.unregister_provider(provider)  # nameko alone raises on the second
    assert consumer._last_provider_unregistered.ready()


def test_importing_the_adapters_patches_nothing():
    probe = (
        "import nameko.amqp.publish, nameko.messaging\n"
        "producer = nameko.amqp.publish.get_producer\n"
        "unregister = nameko.messaging.QueueConsumer.unregister_provider\n"
        "from kernel.nameko_adapters import events, patches, proxy, rpc, rpc_queues, store\n"
        "import services.tickets.service, gateway.service\n"
        "assert nameko.amqp.publish.get_producer is producer\n"
        "assert nameko.messaging.QueueConsumer.unregister_provider is unregister\n"
        "patches.install()\n"
        "assert nameko.amqp.publish.get_producer is not producer\n"
        "assert nameko.messaging.QueueConsumer.unregister_provider is not unregister\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
