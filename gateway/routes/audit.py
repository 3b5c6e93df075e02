"""Routes to audit: a tenant's ledger entries, proofs and verification, the audit public
keys, and the operator's view of the whole ledger.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from werkzeug.wrappers import Request, Response

from gateway.http import api, json_response
from gateway.pagination import ledger_cursor, page_params, read_ledger
from gateway.route import AUDIT, POSITIVE, TEXT, TIME, UUID, one_of
from gateway.routes.base import Routes, utc
from kernel.errors import NotFound, ValidationFailed
from kernel.signed_note import current_key, short_key_id, verifier_key

# The logs an entry can be in: its tenant's own, or the single chain of earlier releases.
LOGS = ("tenant", "frozen")


class AuditRoutes(Routes):
    """Mixed into the gateway service: what audit answers."""

    def _ledger_filters(self, request: Request) -> tuple[dict[str, Any], int, list | None]:
        limit, cursor = page_params(request.args, "ledger")
        filters: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        for name in ("from", "to"):
            # Present but empty is refused as the document's date-time would refuse it.
            if name in request.args:
                moment = utc(request.args[name])
                if moment is None:
                    errors[name] = ["an RFC 3339 time with its offset"]
                else:
                    filters[name] = moment.isoformat()
        if request.args.get("type"):
            filters["types"] = request.args["type"].split(",")
        if "subject_id" in request.args:
            try:
                filters["subject_id"] = str(uuid.UUID(request.args["subject_id"]))
            except ValueError:
                errors["subject_id"] = ["not a valid UUID"]
        if errors:
            raise ValidationFailed(errors)
        return filters, limit, read_ledger(cursor)

    def _ledger_page(self, tenant_id: str | None, request: Request, **extra: Any) -> Response:
        filters, limit, after = self._ledger_filters(request)
        result = self.audit.list_entries(tenant_id, {**filters, **extra}, limit, after)
        cursor = ledger_cursor(result["next"]) if result["next"] else None
        return json_response(200, {"items": result["items"], "next_cursor": cursor})

    @api(
        "GET",
        "/v1/audit/entries",
        roles=AUDIT,
        summary="Ledger entries of the tenant, in ledger order",
        response="EntryListOut",
        errors=(422,),
        listed=True,
        paging="ledger",
        filters={"from": TIME, "to": TIME, "type": TEXT, "subject_id": UUID},
    )
    def audit_entries(self, request: Request) -> Response:
        caller = self._caller(request)
        return self._ledger_page(caller["tenant_id"], request)

    @api(
        "GET",
        "/v1/audit/subjects/<string:subject_id>/entries",
        roles=AUDIT,
        summary="Who touched this person's data: every entry naming them",
        response="EntryListOut",
        errors=(404, 422),
        listed=True,
        paging="ledger",
        filters={"from": TIME, "to": TIME, "type": TEXT},
    )
    def audit_subject(self, request: Request, subject_id: str) -> Response:
        """Who touched this person's data, and when: every entry that names them."""
        caller = self._caller(request)
        try:
            subject = str(uuid.UUID(subject_id))
        except ValueError:
            raise NotFound("no such subject") from None
        return self._ledger_page(caller["tenant_id"], request, subject_id=subject)

    @api(
        "GET",
        "/v1/audit/verify",
        roles=AUDIT,
        summary=(
            "The tenant's own entries checked against the latest signed checkpoint (those not"
            " proved before, a bounded number per call), and the platform verification job's"
            " verdict (no platform-wide figures)"
        ),
        response="TenantVerifyOut",
    )
    def audit_verify(self, request: Request) -> Response:
        """A tenant's own entries and the platform job's verdict; never platform figures."""
        caller = self._caller(request)
        return json_response(200, self.audit.tenant_verify(caller["tenant_id"]))

    @api(
        "GET",
        "/v1/audit/entries/<string:seq>/proof",
        roles=AUDIT,
        summary=(
            "An inclusion proof of an entry of the tenant's own log in the latest signed platform"
            " checkpoint (log=frozen: of the frozen chain in its latest checkpoint); 409 with"
            " Retry-After until a checkpoint covers the entry"
        ),
        response="ProofOut",
        errors=(404, 409, 422),
        path_schemas={"seq": POSITIVE},
        filters={"log": one_of(LOGS)},
        retry_after=(409,),
    )
    def audit_proof(self, request: Request, seq: str) -> Response:
        """Entry ``seq`` of the log an entry's ``log`` names: the tenant's own (the default),
        proved in a platform checkpoint, or the frozen chain of earlier releases, as before."""
        caller = self._caller(request)
        # Present but empty is refused, as the document's enum would refuse it.
        log = request.args.get("log", "tenant")
        if log not in LOGS:
            raise ValidationFailed({"log": [f"one of {', '.join(LOGS)}"]})
        if not seq.isdigit() or not 0 < int(seq) < 2**63:
            raise NotFound("no such entry")
        return json_response(200, self.audit.proof(caller["tenant_id"], int(seq), log))

    @api(
        "GET",
        "/v1/audit/public-key",
        roles=AUDIT,
        # A cancelled tenant checks the manifest of the export it takes out during its grace.
        while_cancelled=True,
        summary=(
            "The platform's audit public keys (with validity periods and the ledger's origin),"
            " which sign receipts, checkpoints and export manifests (also while cancelled)"
        ),
        response="PublicKeyOut",
    )
    def audit_public_key(self, request: Request) -> Response:
        """The keys receipts and checkpoints must be signed with, to check them against (the key
        a receipt carries proves only that someone signed it), each with its validity period,
        and the ledger's origin. The top-level key is the one signing now, as before lists."""
        self._caller(request)
        origin, keys = self.audit_keys
        current = current_key(keys, dt.datetime.now(dt.UTC))
        return json_response(
            200,
            {
                "algorithm": "Ed25519",
                "key_id": short_key_id(current.public_key),
                "public_key": current.public_key_b64,
                "origin": origin,
                "verifier_key": verifier_key(origin, current.public_key),
                "keys": [
                    {
                        **key.as_json(),
                        "key_id": short_key_id(key.public_key),
                        "verifier_key": verifier_key(origin, key.public_key),
                    }
                    for key in keys
                ],
            },
        )

    @api(
        "GET",
        "/v1/operator/audit/entries",
        operator=True,
        summary="Ledger entries of every tenant (operator)",
        response="EntryListOut",
        errors=(422,),
        listed=True,
        paging="ledger",
        filters={"from": TIME, "to": TIME, "type": TEXT, "subject_id": UUID},
    )
    def operator_audit_entries(self, request: Request) -> Response:
        self._operator(request)
        return self._ledger_page(None, request)

    @api(
        "GET",
        "/v1/operator/audit/verify",
        operator=True,
        summary="The verification job's last run over the whole ledger (operator)",
        response="VerifyOut",
    )
    def operator_audit_verify(self, request: Request) -> Response:
        self._operator(request)
        return json_response(200, self.audit.verify())
