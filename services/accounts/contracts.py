"""What accounts shows the rest of the platform: the only module of ``services.accounts`` that
the gateway and other services import (``make lint`` holds them to it; pyproject.toml,
``[tool.importlinter]``).

The command schemas are the HTTP API's requests as well (the gateway validates with them, then
accounts again; the query schemas, ``Find*``, say what a list may be narrowed to), and an
agent's roles are the API's too; the subscriptions are the queues it consumes, which the
gateway's dead-letter endpoints are limited to. Everything else in the package is accounts' own.
"""

from services.accounts.commands import (
    AcceptPolicyV1,
    CreateAgentV1,
    CreateContactV1,
    DeclareIncidentV1,
    FindAgentsV1,
    FindContactsV1,
    PublishPolicyV1,
    RectifyContactV1,
    SetConsentV1,
    SignUpV1,
)
from services.accounts.events import BREACH_CATEGORIES, ROLES
from services.accounts.subscriptions import SUBSCRIPTIONS

__all__ = [
    "BREACH_CATEGORIES",
    "ROLES",
    "SUBSCRIPTIONS",
    "AcceptPolicyV1",
    "CreateAgentV1",
    "CreateContactV1",
    "DeclareIncidentV1",
    "FindAgentsV1",
    "FindContactsV1",
    "PublishPolicyV1",
    "RectifyContactV1",
    "SetConsentV1",
    "SignUpV1",
]
