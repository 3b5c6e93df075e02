"""Mail, out and in. Outbound mail: composed by the service that holds what a mail says,
queued in that service's database sealed under the recipient subject's key (``outbox``), and
sent through the configured SMTP relay (``smtp``) by a loop every process of the service runs
(``sender``).

- ``message``: the RFC 5322 message and its headers, with a Message-ID stable per mail.
- ``outbox``: the ``mail_outbox`` table (each sending service's own migration creates it).
- ``smtp``: one SMTP exchange and what its answer means (sent, try again, refused for good).
- ``sender``: claims due rows, sends, records; ``python -m kernel.mail.sender SERVICE`` runs it
  alone (the reliability tests kill it mid-batch).
- ``dependency``: the same loop in a thread of a nameko service.
- ``entrypoints``: the RPCs a sending service answers over its outbox (the tenant's mail for
  ``GET /v1/mail``, the operators' view); ``kernel.platform.SENDS_MAIL`` lists those services.
- ``sink``: the development SMTP sink ``make run`` starts.

Inbound mail: an SMTP/LMTP listener in the service that stores it, its steps run as the
service's workers (``listener``), and the parsing, limits and detections in plain Python
(``inbound``).
"""
