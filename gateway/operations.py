"""Mixed into the gateway service: what operators (and the console's operations view) read.

- ``GET /metrics``: the gateway process's Prometheus metrics, on the API port too, there with
  the operator token: request counts by route and status are the platform's volume, which no
  tenant and no stranger may watch (the ops port, inside the cluster, needs none);
- ``GET /v1/operator/health``: every service's readiness and outbox lag, and the broker;
- ``GET /v1/operator/dead-letters``, ``POST /v1/operator/dead-letters/{queue}/replay``.

Dead letters are listed by id, type and reason only; replay moves them back into the consumer
queue they came from, and only into a queue of the platform.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import eventlet
from nameko.rpc import RPC_QUEUE_TEMPLATE
from werkzeug.wrappers import Request, Response

from gateway import problems, schemas
from gateway import subscriptions as gateway_subscriptions
from gateway.http import api, json_response, read_json
from gateway.route import TEXT
from gateway.routes.base import Routes
from kernel import deadletters
from kernel.errors import Conflict, DomainError, NotFound, ServiceUnavailable
from kernel.observability import METRICS_CONTENT_TYPE, Operations, render_metrics
from kernel.platform import SERVICES

# Each service of the platform's list by the contracts module it shows the gateway (the only
# module of a service the gateway may import: import-linter, pyproject.toml).
CONTRACTS: dict[str, ModuleType] = {
    name: importlib.import_module(f"services.{name}.contracts") for name in SERVICES
}
# The queues whose dead letters operators list: every consumer queue, then every RPC queue.
DEAD_LETTER_QUEUES: tuple[str, ...] = (
    *(s.queue for c in CONTRACTS.values() for s in c.SUBSCRIPTIONS),
    *(s.queue for s in gateway_subscriptions.SUBSCRIPTIONS),
    *(RPC_QUEUE_TEMPLATE.format(name) for name in SERVICES),
)


def status_of(exc: BaseException) -> int:
    """The status an exception answers with: the gateway's one problem table."""
    for exc_type, kind in problems.PROBLEMS:
        if isinstance(exc, exc_type):
            return kind.status
    return 500


class OperationsRoutes(Routes):
    """The gateway's operations endpoints; ``ops`` also serves them on the ops port."""

    ops = Operations(status_of=status_of)

    @api(
        "GET",
        "/metrics",
        operator=True,
        summary="Prometheus metrics of this process (the operator token; the ops port needs none)",
        response={"type": "string"},
        media_type="text/plain",
    )
    def metrics(self, request: Request) -> Response:
        self._operator(request)
        return Response(render_metrics(), content_type=METRICS_CONTENT_TYPE)

    @api(
        "GET",
        "/v1/operator/health",
        operator=True,
        summary="Every service's readiness and outbox lag, and the broker (operator)",
        response="OperatorHealthOut",
    )
    def operator_health(self, request: Request) -> Response:
        self._operator(request)
        # In parallel: a service that is down costs one RPC timeout, not one each.
        pile: eventlet.GreenPile = eventlet.GreenPile()
        for name in SERVICES:
            pile.spawn(self._service_health, name)
        services = dict(zip(SERVICES, pile, strict=True))
        broker = self.broker_probe()
        return json_response(200, {"services": services, "broker": broker})

    def _service_health(self, name: str) -> dict[str, Any]:
        try:
            answer = getattr(self, name).health()
        except (DomainError, ServiceUnavailable):
            return {
                "ready": False,
                "database": False,
                "outbox_lag": 0,
                "outbox_oldest_seconds": None,
                "reachable": False,
            }
        database = bool(answer.get("database"))
        return {
            "ready": database,
            "database": database,
            "outbox_lag": int(answer.get("outbox_lag") or 0),
            "outbox_oldest_seconds": answer.get("outbox_oldest_seconds"),
            "reachable": True,
        }

    @api(
        "GET",
        "/v1/operator/dead-letters",
        operator=True,
        summary=(
            "Dead letters of every consumer queue, or of ?queue= (ids and reasons only; operator)"
        ),
        response="DeadLetterListOut",
        errors=(404, 422),
        filters={"queue": TEXT},
    )
    def dead_letters(self, request: Request) -> Response:
        self._operator(request)
        queue = request.args.get("queue") or None
        if queue is not None:
            queue = _platform_queue(queue)
        try:
            items = deadletters.list_dead_letters(
                self.config["AMQP_URI"],
                queue,
                every=DEAD_LETTER_QUEUES,
                ssl=self.config.get("AMQP_SSL"),
            )
        except deadletters.UnknownQueue:
            raise NotFound("no such queue") from None
        except OSError:
            raise ServiceUnavailable("the broker is not reachable") from None
        return json_response(200, {"items": items})

    @api(
        "POST",
        "/v1/operator/dead-letters/<string:queue>/replay",
        operator=True,
        summary="Move dead letters (all, or those in ids) back into their queue (operator)",
        response="ReplayedOut",
        body="ReplayDeadLettersV1",
        errors=(400, 404, 413, 422),
    )
    def replay_dead_letters(self, request: Request, queue: str) -> Response:
        self._operator(request)
        name = _platform_queue(queue)
        command = read_json(request, schemas.ReplayDeadLettersV1()) if request.get_data() else {}
        try:
            moved = deadletters.replay_dead_letters(
                self.config["AMQP_URI"], name, command.get("ids"), ssl=self.config.get("AMQP_SSL")
            )
        except deadletters.UnknownQueue:
            raise NotFound("no such queue") from None
        except deadletters.NotReplayable as exc:
            raise Conflict(str(exc)) from None
        except OSError:
            raise ServiceUnavailable("the broker is not reachable") from None
        return json_response(200, {"replayed": moved})


def _platform_queue(queue: str) -> str:
    """A consumer or RPC queue of the platform, or 404: nothing is ever published to another."""
    name = deadletters.live_queue(queue)
    if name not in DEAD_LETTER_QUEUES:
        raise NotFound("no such queue")
    return name
