"""Webhooks: a tenant's HTTP endpoints, told of its tickets' and privacy requests' events.

- ``catalogue``: which integration events become which webhook events, and the payload of each,
  built from the event's ids and states by an allow-list (never a copy of the event);
- ``addresses``: which URLs may be registered and which addresses may be connected to (no
  server-side request forgery), checked at registration and again at every delivery;
- ``signing``: the ``Ledgerdesk-Signature`` header (HMAC-SHA256 over ``timestamp.body``);
- ``store``: endpoints (URL and secret sealed under the tenant's key) and the deliveries owed to
  them, an outbox of the gateway's own database, with their attempts;
- ``sender``: one POST to the address checked, with a bounded exchange and no redirects;
- ``dispatcher``: claims due deliveries (``FOR UPDATE SKIP LOCKED``), sends them, records each
  attempt and retries with backoff until the retry window closes (then ``failed``).

Where it runs and why: docs/architecture.md, "Webhooks".
"""
