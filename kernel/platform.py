"""The platform's services, by name: the one list the process runner (``services.platform``),
the gateway's RPC proxies, readiness and operator health, and the dead-letter queues all take.

Names only: the kernel knows no service's code (import-linter holds it to that), and each part
finds what it needs by the name (``services.<name>.service``, ``services.<name>.contracts``).
The gateway is not in the list: it serves no RPC and is started apart (``services.platform``).
"""

from __future__ import annotations

SERVICES: tuple[str, ...] = ("accounts", "tickets", "billing", "audit", "retention")
