"""What accounts consumes: retention's privacy commands, and retention's news of privacy
requests that the tenant's admins are mailed about (``notices``)."""

from kernel import privacy
from kernel.topology import Subscription

PRIVACY = privacy.subscription("accounts")

RETENTION = Subscription(
    "accounts.retention",
    (
        "retention.privacy_request_awaiting_approval",
        "retention.privacy_request_completed",
        "retention.privacy_request_due_soon",
        "retention.privacy_request_overdue",
    ),
)

SUBSCRIPTIONS = [PRIVACY, RETENTION]
