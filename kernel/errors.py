"""Domain errors every service raises and the gateway maps to HTTP, one table for all.

Registered with nameko so an error raised in a service arrives at the caller as the same
exception type, not as a generic RemoteError.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from nameko.exceptions import deserialize_to_instance


class DomainError(Exception):
    """Base of the errors that are part of the API; ``detail`` is safe to show a client."""

    def __init__(self, detail: str = ""):
        self.detail = detail
        super().__init__(detail)


@deserialize_to_instance
class NotFound(DomainError):
    """Absent, or belonging to another tenant: the two are indistinguishable on purpose."""


def require_id(value: Any, noun: str) -> None:
    """An id that is not even a UUID names nothing: NotFound, like an absent one."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        raise NotFound(f"no such {noun}") from None


@deserialize_to_instance
class Conflict(DomainError):
    """A version conflict or a state that does not allow the change."""


@deserialize_to_instance
class VersionConflict(Conflict):
    """The version a write was based on (its If-Match) is not the current one: read again.
    Its own kind, so a client tells it from a state that does not allow the change."""


@deserialize_to_instance
class ChangedMeanwhile(Conflict):
    """A write lost an optimistic-concurrency race (the RPC wrapper's ``ConcurrencyError``):
    a 409 to an API client, and to a caller that cannot ask a person (a relay's mail) a
    reason to try the same request again."""


@deserialize_to_instance
class SubjectErased(Conflict):
    """The key of a person the write concerns was shredded meanwhile (``KeyShredded``)."""


@deserialize_to_instance
class RetryLater(Conflict):
    """Not yet: the state the request needs comes about by itself; ``retry_after`` is whole
    seconds (at least 1) a client should wait before asking again (the Retry-After header)."""

    def __init__(self, retry_after: float | str, detail: str = ""):
        # A str is how nameko hands the number back from a remote service.
        self.retry_after: int = max(1, math.ceil(float(retry_after)))
        super().__init__(detail or f"not yet; retry in {self.retry_after} s")
        self.args = (self.retry_after, self.detail)


@deserialize_to_instance
class Gone(DomainError):
    """It existed and is deleted for good (an export past its expiry, say): not a 404, so a
    client knows not to look for it again."""


@deserialize_to_instance
class TooLarge(DomainError):
    """More than a limit allows: a file, or all of a ticket's files together (413)."""


@deserialize_to_instance
class Forbidden(DomainError):
    pass


@deserialize_to_instance
class Unauthorized(DomainError):
    pass


@deserialize_to_instance
class ValidationFailed(DomainError):
    def __init__(self, errors: dict[str, Any], detail: str = "the request is not valid"):
        self.errors = errors
        super().__init__(detail)
        self.args = (errors, detail)

    def __str__(self) -> str:
        # Logged with tracebacks: the field names and messages may quote what a client sent.
        return self.detail


@deserialize_to_instance
class ServiceUnavailable(DomainError):
    """A dependency (a service, the broker, the database) did not answer in time."""


@deserialize_to_instance
class TenantMoving(ServiceUnavailable):
    """The tenant is being moved to another region cell (``services.tenant_move``): nothing of
    it is written until the move ends; ``retry_after`` whole seconds (the Retry-After header)."""

    def __init__(self, retry_after: float | str = 5, detail: str = ""):
        self.retry_after: int = max(1, math.ceil(float(retry_after)))
        super().__init__(
            detail or "the tenant is being moved to another region; retry in a few seconds"
        )
        self.args = (self.retry_after, self.detail)
