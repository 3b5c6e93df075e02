"""The Ledgerdesk services; ``services.platform`` lists them and runs them together."""
