"""Routes to retention's periods: the policies per data category, the shortened periods that
wait for a second admin, and the services retention waits for (operator).
"""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from gateway import schemas
from gateway.http import RESOURCES, api, json_response, read_json
from gateway.route import ADMIN, one_of
from gateway.routes.base import Routes, change_status
from services.retention.contracts import CHANGE_STATUSES


class RetentionRoutes(Routes):
    """Mixed into the gateway service: retention periods and their changes."""

    @api(
        "GET",
        "/v1/retention/policies",
        roles=ADMIN,
        summary="Retention periods per data category",
        response="RetentionPolicyListOut",
    )
    def retention_policies(self, request: Request) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.policies(caller["tenant_id"]))

    @api(
        "PUT",
        "/v1/retention/policies/<string:category>",
        roles=ADMIN,
        summary=(
            "Set this tenant's period: lengthening it applies at once (200, the period);"
            " shortening it while the approval policy names erasure is a change another admin must"
            " approve (202, the change)"
        ),
        response="RetentionPolicyOut",
        body="SetPolicyV1",
        errors=(400, 404, 413, 422),
        also=((202, "RetentionPeriodChangeOut", "the change waits for another admin's approval"),),
    )
    def set_retention_policy(self, request: Request, category: str) -> Response:
        """200 with the period when it applies at once; 202 with the change when it shortens a
        period while erasure needs approval: another admin decides that."""
        caller = self._caller(request)
        command = read_json(request, schemas.SetPolicyV1())
        changed = self.retention.change_retention_period(caller, category, command)
        if not changed["applied"]:
            request.environ[RESOURCES] = [changed["result"]["id"]]
        return json_response(200 if changed["applied"] else 202, changed["result"])

    @api(
        "GET",
        "/v1/retention/period-changes",
        roles=ADMIN,
        summary="Shortened periods that waited or wait for approval, oldest first",
        response="RetentionPeriodChangeListOut",
        errors=(422,),
        listed=True,
        filters={"status": one_of(CHANGE_STATUSES)},
    )
    def list_period_changes(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        status = change_status(request)
        return self._listing(
            self.retention.list_period_changes(caller["tenant_id"], status, limit, after)
        )

    @api(
        "GET",
        "/v1/retention/period-changes/<string:change_id>",
        roles=ADMIN,
        summary="A shortened period that waits or waited for approval",
        response="RetentionPeriodChangeOut",
        errors=(404,),
    )
    def get_period_change(self, request: Request, change_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.get_period_change(caller["tenant_id"], change_id))

    @api(
        "POST",
        "/v1/retention/period-changes/<string:change_id>/approve",
        roles=ADMIN,
        summary=(
            "Approve a shortened period, which then applies: not by its filer, nor with a key the"
            " filer issued, and only by an admin since before it was filed, with a key issued"
            " before it (403); 409 when it no longer waits"
        ),
        response="RetentionPeriodChangeOut",
        body="DecideRequestV1",
        errors=(400, 404, 409, 413, 422),
    )
    def approve_period_change(self, request: Request, change_id: str) -> Response:
        return self._decide_period_change(request, change_id, "approved")

    @api(
        "POST",
        "/v1/retention/period-changes/<string:change_id>/deny",
        roles=ADMIN,
        summary="Deny a shortened period, with the reason (same rules as approving)",
        response="RetentionPeriodChangeOut",
        body="DecideRequestV1",
        errors=(400, 404, 409, 413, 422),
    )
    def deny_period_change(self, request: Request, change_id: str) -> Response:
        return self._decide_period_change(request, change_id, "denied")

    def _decide_period_change(self, request: Request, change_id: str, decision: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.DecideRequestV1())
        decided = self.retention.decide_period_change(caller, change_id, decision, command)
        request.environ[RESOURCES] = [decided["id"]]
        return json_response(200, decided)

    @api(
        "GET",
        "/v1/operator/privacy/services",
        operator=True,
        summary="The services retention waits for, and their data categories (operator)",
        response="RegisteredServicesOut",
    )
    def privacy_services(self, request: Request) -> Response:
        self._operator(request)
        return json_response(200, {"items": self.retention.registered_services()})
