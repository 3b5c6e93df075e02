"""What wires the kernel into nameko services: dependencies and entrypoints, kept thin.

One module per job, each imported from where it is (this package re-exports nothing):

- ``patches``: what this process mends in nameko and kombu, applied by ``install()``, which
  ``kernel.runner`` and the test kit call (importing an adapter patches nothing);
- ``store``: ``EventStoreDependency`` and ``store_of``, a service's event store for its workers
  (opened by ``kernel.stores``);
- ``events``: ``consume_events``, the durable event consumer;
- ``proxy``: ``TimedRpcProxy``, RPC calls with a timeout, replies by direct reply-to, and
  ``standalone_rpc``, the same calls outside a service's workers;
- ``rpc``: ``rpc``, the entrypoint on a quorum queue that sets aside what it cannot serve;
- ``rpc_queues``: RPC queue administration on the broker (declare, migrate, dead letters);
- ``clock``: ``Clock``, the time as a dependency;
- ``common``: what they share (``settings_of``, the errors that mean "not now").
"""
