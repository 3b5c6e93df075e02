"""The shared kernel: what every Ledgerdesk service builds on.

Event envelope, event store, projections, outbox and relay, inbox, crypto-shredding,
configuration, migrations, tracing and the nameko adapters that wire them into services.
"""
