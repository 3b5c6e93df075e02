"""The tenant's mail: what each mail-sending service (``kernel.platform.SENDS_MAIL``) queued,
sent or failed to send, one list across them (``GET /v1/mail``).

Admins only: a failed mail is the tenant's to mend (a requester's address bounced), and the list
names the people mailed, by id. Ids, states, reply codes and times only: the addresses and texts
stay sealed in the services that hold them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from werkzeug.wrappers import Request, Response

from gateway.http import api
from gateway.route import ADMIN, one_of
from gateway.routes.base import Routes
from kernel.errors import ValidationFailed
from kernel.mail.outbox import STATUSES
from kernel.platform import SENDS_MAIL


def merged(pages: dict[str, dict[str, Any]], limit: int) -> dict[str, Any]:
    """One page of several services' pages, each oldest first after the same position: the
    first ``limit`` of their union in (created_at, id) order is the page of the whole list, and
    a next page exists when more is left over or any service said it had more."""
    items = sorted(
        ({**item, "service": service} for service, page in pages.items() for item in page["items"]),
        key=lambda item: (dt.datetime.fromisoformat(item["created_at"]), item["id"]),
    )
    more = len(items) > limit or any(page["next"] for page in pages.values())
    shown = items[:limit]
    following = [shown[-1]["created_at"], shown[-1]["id"]] if more and shown else None
    return {"items": shown, "next": following}


class MailRoutes(Routes):
    """Mixed into the gateway service: the tenant's mail."""

    @api(
        "GET",
        "/v1/mail",
        roles=ADMIN,
        summary=(
            "This tenant's mails, oldest first, from every service that sends mail: each by id,"
            " with its kind, its recipient and what it carries (by id), its state (pending,"
            " sent, failed), attempts, the relay's last reply code and outcome, and its times;"
            " never an address or a text. `status=failed` lists the mails refused for good (a"
            " 5xx) or still refused when their retry window closed"
        ),
        response="MailListOut",
        errors=(422,),
        listed=True,
        filters={"status": one_of(STATUSES)},
    )
    def list_mail(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        # An empty value is not a filter left out: like any other value, it must be a status.
        status = request.args.get("status")
        if status is not None and status not in STATUSES:
            raise ValidationFailed({"status": [f"one of {', '.join(STATUSES)}"]})
        pages = {
            service: getattr(self, service).tenant_mail(caller["tenant_id"], status, limit, after)
            for service in SENDS_MAIL
        }
        return self._listing(merged(pages, limit))
