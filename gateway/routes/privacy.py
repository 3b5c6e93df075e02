"""Routes to retention's data-subject requests: filing, deciding (four eyes), following,
exporting and the erasure receipt; the approval policy and its changes.
"""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from gateway import privacy, schemas
from gateway.http import RESOURCES, api, json_response, read_json
from gateway.route import ADMIN, AUDIT, one_of
from gateway.routes.base import Routes, cancelled, change_status
from kernel.errors import Forbidden, ValidationFailed
from services.retention.contracts import CHANGE_STATUSES


class PrivacyRoutes(Routes):
    """Mixed into the gateway service: privacy requests and who approves them."""

    @api(
        "POST",
        "/v1/privacy/requests",
        roles=ADMIN,
        while_cancelled=True,
        summary=(
            "File an access, erasure, rectification, restriction or objection request for a"
            " subject; while the tenant is cancelled, access requests only"
        ),
        status=202,
        response="PrivacyRequestOut",
        body="FilePrivacyRequestV1",
        errors=(400, 404, 413, 422),
    )
    def file_privacy_request(self, request: Request) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.FilePrivacyRequestV1())
        if cancelled(caller) and command["type"] != "access":
            raise Forbidden(
                "the tenant is cancelled: only access requests (a data export) can be filed"
                " until it is reactivated"
            )
        filed = self.retention.file_request(caller, command)
        created = filed.pop("created")
        request.environ[RESOURCES] = [filed["id"], *filed["subject"].values()]
        return json_response(202 if created else 200, filed)

    @api(
        "GET",
        "/v1/privacy/requests",
        roles=ADMIN,
        while_cancelled=True,
        summary="This tenant's requests, oldest first; filter by status (also while cancelled)",
        response="PrivacyRequestListOut",
        errors=(422,),
        listed=True,
        filters={"status": one_of(schemas.PRIVACY_STATUSES)},
    )
    def list_privacy_requests(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        # An empty value is not a filter left out: like any other value, it must be a status.
        status = request.args.get("status")
        if status is not None and status not in schemas.PRIVACY_STATUSES:
            raise ValidationFailed({"status": [f"one of {', '.join(schemas.PRIVACY_STATUSES)}"]})
        return self._listing(
            self.retention.list_requests(caller["tenant_id"], status, limit, after)
        )

    @api(
        "POST",
        "/v1/privacy/requests/<string:request_id>/approve",
        roles=ADMIN,
        while_cancelled=True,
        summary=(
            "Approve a request that waits for approval: not by the admin who filed it (409), nor"
            " with a key the filer issued, and only by an admin since before it was filed (403);"
            " while the tenant is cancelled, access requests only"
        ),
        response="PrivacyRequestOut",
        body="DecideRequestV1",
        errors=(400, 404, 409, 413, 422),
    )
    def approve_privacy_request(self, request: Request, request_id: str) -> Response:
        return self._decide(request, request_id, "approved")

    @api(
        "POST",
        "/v1/privacy/requests/<string:request_id>/deny",
        roles=ADMIN,
        while_cancelled=True,
        summary=(
            "Deny a request that waits for approval, with the reason (same rules as approving);"
            " while the tenant is cancelled, access requests only"
        ),
        response="PrivacyRequestOut",
        body="DecideRequestV1",
        errors=(400, 404, 409, 413, 422),
    )
    def deny_privacy_request(self, request: Request, request_id: str) -> Response:
        return self._decide(request, request_id, "denied")

    def _decide(self, request: Request, request_id: str, decision: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.DecideRequestV1())
        # An access request a cancelled tenant's policy holds for approval must be decidable,
        # or its export could never be had during the grace.
        if cancelled(caller):
            held = self.retention.get_request(caller["tenant_id"], request_id)
            if held["type"] != "access":
                raise Forbidden(
                    "the tenant is cancelled: only access requests can be decided until it is"
                    " reactivated"
                )
        decided = self.retention.decide_request(caller, request_id, decision, command)
        request.environ[RESOURCES] = [decided["id"], *decided["subject"].values()]
        return json_response(200, decided)

    @api(
        "GET",
        "/v1/privacy/approval-policy",
        roles=ADMIN,
        summary="The request types that wait for a second admin's approval",
        response="ApprovalPolicyOut",
    )
    def approval_policy(self, request: Request) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.approval_policy(caller["tenant_id"]))

    @api(
        "PUT",
        "/v1/privacy/approval-policy",
        roles=ADMIN,
        summary=(
            "Set the request types that wait for a second admin's approval: widening the policy"
            " applies at once (200, the policy); lifting or narrowing a policy that requires"
            " approval is a change another admin must approve (202, the change)"
        ),
        response="ApprovalPolicyOut",
        body="SetApprovalPolicyV1",
        errors=(400, 413, 422),
        also=((202, "ApprovalPolicyChangeOut", "the change waits for another admin's approval"),),
    )
    def set_approval_policy(self, request: Request) -> Response:
        """200 with the policy when it applies at once (widening it); 202 with the change when
        it lifts or narrows a policy that requires approval: another admin decides that."""
        caller = self._caller(request)
        command = read_json(request, schemas.SetApprovalPolicyV1())
        changed = self.retention.change_approval_policy(caller, command)
        if not changed["applied"]:
            request.environ[RESOURCES] = [changed["result"]["id"]]
        return json_response(200 if changed["applied"] else 202, changed["result"])

    @api(
        "GET",
        "/v1/privacy/approval-policy/changes",
        roles=ADMIN,
        summary="Changes of the approval policy that waited or wait for approval, oldest first",
        response="ApprovalPolicyChangeListOut",
        errors=(422,),
        listed=True,
        filters={"status": one_of(CHANGE_STATUSES)},
    )
    def list_policy_changes(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        status = change_status(request)
        return self._listing(
            self.retention.list_policy_changes(caller["tenant_id"], status, limit, after)
        )

    @api(
        "GET",
        "/v1/privacy/approval-policy/changes/<string:change_id>",
        roles=ADMIN,
        summary="A change of the approval policy",
        response="ApprovalPolicyChangeOut",
        errors=(404,),
    )
    def get_policy_change(self, request: Request, change_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.get_policy_change(caller["tenant_id"], change_id))

    @api(
        "POST",
        "/v1/privacy/approval-policy/changes/<string:change_id>/approve",
        roles=ADMIN,
        summary=(
            "Approve a waiting change of the approval policy, which then applies: not by its"
            " filer, nor with a key the filer issued, and only by an admin since before it was"
            " filed (403); 409 when it no longer waits (decided, or superseded by a newer change)"
        ),
        response="ApprovalPolicyChangeOut",
        body="DecideRequestV1",
        errors=(400, 404, 409, 413, 422),
    )
    def approve_policy_change(self, request: Request, change_id: str) -> Response:
        return self._decide_change(request, change_id, "approved")

    @api(
        "POST",
        "/v1/privacy/approval-policy/changes/<string:change_id>/deny",
        roles=ADMIN,
        summary=(
            "Deny a waiting change of the approval policy, with the reason (same rules as"
            " approving)"
        ),
        response="ApprovalPolicyChangeOut",
        body="DecideRequestV1",
        errors=(400, 404, 409, 413, 422),
    )
    def deny_policy_change(self, request: Request, change_id: str) -> Response:
        return self._decide_change(request, change_id, "denied")

    def _decide_change(self, request: Request, change_id: str, decision: str) -> Response:
        caller = self._caller(request)
        command = read_json(request, schemas.DecideRequestV1())
        decided = self.retention.decide_policy_change(caller, change_id, decision, command)
        request.environ[RESOURCES] = [decided["id"]]
        return json_response(200, decided)

    @api(
        "GET",
        "/v1/privacy/requests/<string:request_id>",
        roles=ADMIN,
        while_cancelled=True,
        summary="A request and every service's answer (also while cancelled)",
        response="PrivacyRequestOut",
        errors=(404,),
    )
    def get_privacy_request(self, request: Request, request_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.get_request(caller["tenant_id"], request_id))

    @api(
        "GET",
        "/v1/privacy/requests/<string:request_id>/export",
        roles=ADMIN,
        while_cancelled=True,
        summary=(
            "An access request's export: everything every service holds about the subject (also"
            " while cancelled, during the grace)"
        ),
        response="ExportOut",
        errors=(404,),
    )
    def get_privacy_export(self, request: Request, request_id: str) -> Response:
        caller = self._caller(request)
        document = self.retention.export(caller["tenant_id"], request_id, [self.name])
        if self.name in document["services"]:  # the gateway's own part, from its own store
            with self.store.unit_of_work() as uow:
                document["services"][self.name] = privacy.export(
                    uow, caller["tenant_id"], document["subject_id"], self.idempotency.ttl
                )
        return json_response(200, document)

    @api(
        "GET",
        "/v1/privacy/requests/<string:request_id>/receipt",
        roles=AUDIT,
        summary="A completed erasure's receipt, signed with the audit key",
        response="ReceiptOut",
        errors=(404,),
    )
    def get_privacy_receipt(self, request: Request, request_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.get_receipt(caller["tenant_id"], request_id))
