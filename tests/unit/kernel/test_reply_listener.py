"""A reply whose acknowledgement meets a vanished broker still reaches its caller, and the
error does not escape to end the container."""

from __future__ import annotations

from types import SimpleNamespace

from kernel.nameko_adapters.proxy import _TransientReplyListener


class BrokerGone:
    def ack_message(self, message: object) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")


def test_a_reply_whose_ack_fails_is_still_delivered():
    listener = _TransientReplyListener()
    listener.queue_consumer = BrokerGone()
    waiting = listener.get_reply_event("call-1")
    message = SimpleNamespace(properties={"correlation_id": "call-1"})

    listener.handle_message({"result": 42, "error": None}, message)

    assert waiting.ready()
    assert waiting.wait() == {"result": 42, "error": None}
