"""``TimedRpcProxy``: nameko RPC with a timeout on every call, replies on a transient queue."""

from __future__ import annotations

import logging
from typing import Any

import eventlet
from kombu import Queue
from nameko.exceptions import UnknownService
from nameko.rpc import (
    RPC_REPLY_QUEUE_TEMPLATE,
    RPC_REPLY_QUEUE_TTL,
    ReplyListener,
    RpcProxy,
    get_rpc_exchange,
)

from kernel.errors import ServiceUnavailable
from kernel.nameko_adapters.common import BROKER_UNREACHABLE, settings_of
from kernel.nameko_adapters.patches import PublisherHeartbeats

log = logging.getLogger(__name__)


class _TimedServiceProxy:
    def __init__(self, proxy: Any, service: str, timeout: float):
        self._proxy = proxy
        self._service = service
        self._timeout = timeout

    def __getattr__(self, method: str) -> Any:
        remote = getattr(self._proxy, method)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                reply = remote.call_async(*args, **kwargs)
            except UnknownService:
                raise ServiceUnavailable(f"{self._service} is not running") from None
            except BROKER_UNREACHABLE:
                raise ServiceUnavailable("the message broker is unreachable") from None
            with eventlet.Timeout(self._timeout, False):
                return reply.result()
            raise ServiceUnavailable(f"{self._service} did not answer within {self._timeout:g}s")

        return call


class _TransientReplyListener(ReplyListener):
    """nameko's reply listener, but its queue is transient. nameko declares it durable: a
    durable classic queue lives on the node that declared it, and while that node is down it
    can be declared nowhere else (NOT_FOUND), so the caller could never listen again. A
    transient queue goes with its node, and the caller's reconnection declares it anew on a
    surviving one; replies in flight then are lost, and their callers time out (a 503)."""

    def setup(self) -> None:
        super().setup()
        self.queue = Queue(
            RPC_REPLY_QUEUE_TEMPLATE.format(self.container.service_name, self.routing_key),
            exchange=get_rpc_exchange(self.container.config),
            routing_key=self.routing_key,
            durable=False,
            auto_delete=False,
            queue_arguments={"x-expires": RPC_REPLY_QUEUE_TTL},
        )

    def handle_message(self, body: Any, message: Any) -> None:
        try:
            self.queue_consumer.ack_message(message)
        except BROKER_UNREACHABLE as exc:
            # The reply is in hand; the broker went away before it heard the ack, and the
            # unacknowledged reply goes with the connection. Letting the error out (as nameko
            # does) ends the container, and every request of the process fails from then on.
            log.warning(
                "reply acknowledged to no one: the broker is unreachable (%s)", type(exc).__name__
            )
        reply_event = self._reply_events.pop(message.properties.get("correlation_id"), None)
        if reply_event is not None:
            reply_event.send(body)


class TimedRpcProxy(RpcProxy):
    """An RPC proxy whose every call gives up after ``LEDGERDESK_RPC_TIMEOUT`` seconds."""

    rpc_reply_listener = _TransientReplyListener()
    publisher_heartbeats = PublisherHeartbeats()

    def get_dependency(self, worker_ctx: Any) -> _TimedServiceProxy:
        timeout = settings_of(self.container).rpc_timeout
        return _TimedServiceProxy(super().get_dependency(worker_ctx), self.target_service, timeout)
