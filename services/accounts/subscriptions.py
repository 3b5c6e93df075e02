"""What accounts consumes: retention's privacy commands."""

from kernel import privacy

PRIVACY = privacy.subscription("accounts")

SUBSCRIPTIONS = [PRIVACY]
