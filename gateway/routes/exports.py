"""Routes to a tenant's whole export (retention builds it: ``services.retention.tenant_exports``):
ask for one, follow it, list them, download the archive once ready.

Admins only: an export reads every person of the tenant, which is the whole tenant's data, not
an agent's working set; an auditor reads the ledger, which the export holds as well, but not
people's records. Allowed while the tenant is cancelled, during the grace: taking one's data out
before the destruction is the point. A download is an access record naming the export.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

from werkzeug.wrappers import Request, Response

from gateway.http import RESOURCES, api, json_response
from gateway.route import ADMIN
from gateway.routes.base import Routes
from kernel.errors import DomainError

log = logging.getLogger(__name__)

ZIP: dict[str, Any] = {"type": "string", "format": "binary"}


class ExportRoutes(Routes):
    """Mixed into the gateway service: a tenant's whole export."""

    @api(
        "POST",
        "/v1/tenant/exports",
        roles=ADMIN,
        while_cancelled=True,
        summary=(
            "Export the whole tenant: every contact, agent, ticket, message, attached file,"
            " consent record, invoice and the tenant's ledger entries, as a ZIP of JSON Lines"
            " files and the files' bytes (`attachments/<id>`) with a manifest signed by the"
            " audit key; built in the background (follow it with GET)."
            " One at a time: while one is under way, that one is answered (200). Also while"
            " cancelled"
        ),
        status=202,
        response="TenantExportOut",
        errors=(422,),  # an Idempotency-Key that cannot be one
        also=((200, "TenantExportOut", "the export already under way"),),
        idempotent=True,
    )
    def start_tenant_export(self, request: Request) -> Response:
        caller = self._caller(request)

        def produce() -> Response:
            export = self.retention.start_tenant_export(caller)
            created = export.pop("created")
            request.environ[RESOURCES] = [export["id"]]
            return json_response(202 if created else 200, export)

        return self._idempotent(request, caller["tenant_id"], produce)

    @api(
        "GET",
        "/v1/tenant/exports",
        roles=ADMIN,
        while_cancelled=True,
        summary="The tenant's exports, oldest first (also while cancelled)",
        response="TenantExportListOut",
        errors=(422,),
        listed=True,
    )
    def list_tenant_exports(self, request: Request) -> Response:
        caller = self._caller(request)
        limit, after = self._page(request)
        return self._listing(self.retention.list_tenant_exports(caller["tenant_id"], limit, after))

    @api(
        "GET",
        "/v1/tenant/exports/<string:export_id>",
        roles=ADMIN,
        while_cancelled=True,
        summary="An export: its status and percent done, and once ready its counts and expiry",
        response="TenantExportOut",
        errors=(404,),
    )
    def get_tenant_export(self, request: Request, export_id: str) -> Response:
        caller = self._caller(request)
        return json_response(200, self.retention.get_tenant_export(caller["tenant_id"], export_id))

    @api(
        "GET",
        "/v1/tenant/exports/<string:export_id>/archive",
        roles=ADMIN,
        while_cancelled=True,
        summary=(
            "The export's archive (application/zip), streamed, until it expires: 409 with"
            " Retry-After while it is built, 410 once it expired or an erasure ended it. Check"
            " it with the manifest's signature (GET /v1/audit/public-key) and hashes"
        ),
        response=ZIP,
        media_type="application/zip",
        errors=(404, 409, 410),
        retry_after=(409,),
    )
    def download_tenant_export(self, request: Request, export_id: str) -> Response:
        caller = self._caller(request)
        tenant_id = caller["tenant_id"]
        retention = self.retention
        # The first chunk before the answer: an archive that cannot be had is an error status,
        # not a broken download.
        first = retention.tenant_export_chunk(tenant_id, export_id, 0)
        export = retention.get_tenant_export(tenant_id, export_id)
        digest = base64.b64encode(bytes.fromhex(export["sha256"])).decode("ascii")
        return Response(
            _chunks(retention, tenant_id, export_id, first, export["chunks"]),
            status=200,
            mimetype="application/zip",
            direct_passthrough=True,
            headers={
                "Content-Length": str(export["bytes"]),
                "Content-Disposition": f'attachment; filename="ledgerdesk-export-{export_id}.zip"',
                "ETag": f'"{export["sha256"]}"',
                "Repr-Digest": f"sha-256=:{digest}:",
            },
        )


def _chunks(
    retention: Any, tenant_id: str, export_id: str, first: str, count: int
) -> Iterator[bytes]:
    """The archive's chunks in order, each asked of retention as the client reads: one chunk in
    memory at a time. A failure half way (the export expired meanwhile, retention out of reach)
    ends the body short of its Content-Length, which every client reports as an error."""
    yield base64.b64decode(first)
    for seq in range(1, count):
        try:
            chunk = retention.tenant_export_chunk(tenant_id, export_id, seq)
        except DomainError as exc:
            log.warning(
                "export %s: download cut at chunk %d (%s)", export_id, seq, type(exc).__name__
            )
            return
        yield base64.b64decode(chunk)
