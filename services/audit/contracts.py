"""What the audit ledger shows the rest of the platform: the only module of ``services.audit``
that the gateway and other services import (``make lint`` holds them to it; pyproject.toml,
``[tool.importlinter]``).

Audit takes no commands by HTTP: what it shows is the queues it consumes, which the gateway's
dead-letter endpoints are limited to. Everything else in the package is audit's own.
"""

from services.audit.subscriptions import SUBSCRIPTIONS

__all__ = ["SUBSCRIPTIONS"]
