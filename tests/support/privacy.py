"""Privacy commands as retention sends them, for tests that deliver one to a service."""

from __future__ import annotations

import uuid

from kernel.envelope import Envelope, new_envelope
from kernel.privacy import PRIVACY_COMMAND


def privacy_command(
    command: str,
    tenant_id: str,
    subject_id: str | None = None,
    *,
    subject_kind: str | None = None,
    services: list[str] | None = None,
    trace: dict[str, str] | None = None,
) -> Envelope:
    """A ``privacy_command`` of the latest version with a new request id, for every service or
    for the ``services`` named (the others leave it). ``subject_kind`` defaults to a contact."""
    request_id = str(uuid.uuid4())
    return new_envelope(
        type="privacy_command",
        schema_version=PRIVACY_COMMAND.latest,
        source="retention",
        stream_id=f"privacy-{request_id}",
        stream_version=1,
        tenant_id=uuid.UUID(tenant_id),
        actor_id="retention",
        payload={
            "request_id": request_id,
            "command": command,
            "tenant_id": tenant_id,
            "subject_id": subject_id,
            "subject_kind": None if subject_id is None else subject_kind or "contact",
            "category": None,
            "before": None,
            "services": services,
            "cutoffs": None,
        },
        trace=trace,
    )
