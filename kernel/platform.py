"""The platform's services, by name: the one list the process runner (``services.platform``),
the gateway's RPC proxies, readiness and operator health, and the dead-letter queues all take.

Names only: the kernel knows no service's code (import-linter holds it to that), and each part
finds what it needs by the name (``services.<name>.service``, ``services.<name>.contracts``).
The gateway is not in the list: it serves no RPC and is started apart (``services.platform``).
"""

from __future__ import annotations

SERVICES: tuple[str, ...] = ("accounts", "tickets", "billing", "audit", "retention")

# The services that send mail (``kernel.mail``): each keeps a ``mail_outbox`` and serves its
# RPCs (``kernel.mail.entrypoints``); the gateway's ``GET /v1/mail`` asks each in turn. A
# service that starts sending mail is one more name here.
SENDS_MAIL: tuple[str, ...] = ("tickets", "accounts")
