"""What retention shows the rest of the platform: the only module of ``services.retention``
that the gateway and other services import (``make lint`` holds them to it; pyproject.toml,
``[tool.importlinter]``).

The command schemas are the HTTP API's requests as well (the gateway validates with them, then
retention again); the subscriptions are the queues it consumes, which the gateway's dead-letter
endpoints are limited to. Everything else in the package is retention's own.
"""

from services.retention.commands import (
    DecideRequestV1,
    FilePrivacyRequestV1,
    SetApprovalPolicyV1,
    SetPolicyV1,
)
from services.retention.events import DECISIONS, MESSAGES
from services.retention.subscriptions import SUBSCRIPTIONS

# MESSAGES: what retention publishes (ids and states), for a consumer (accounts' notices) to
# read every version of it.

# What becomes of a change that waits for a second admin (a shortened period, a lifted or
# narrowed approval policy): the API's filter and answers name the same.
CHANGE_STATUSES = ("awaiting_approval", "approved", "denied", "superseded")

__all__ = [
    "CHANGE_STATUSES",
    "DECISIONS",
    "MESSAGES",
    "SUBSCRIPTIONS",
    "DecideRequestV1",
    "FilePrivacyRequestV1",
    "SetApprovalPolicyV1",
    "SetPolicyV1",
]
