"""What every benchmark section shares: result rows, percentiles, worlds and one running stack.

A section is a function ``run(ctx) -> list[Row]``. Every figure it reports is compared with a
baseline measured in the same run, because the machine is shared and its absolute speed moves
from one minute to the next; the ratio is the figure that means something.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kernel.config import Settings
from kernel.testing import Infrastructure, make_world

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack


@dataclass
class Row:
    """One line of the table: a measure, ours against its baseline, and the target."""

    section: str
    measure: str
    ours: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    # "higher" when a larger ratio ours/baseline is better, "lower" for times.
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.ours / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank: a measured value, never interpolated."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def infrastructure_from_env() -> Infrastructure:
    """The broker and database the environment names (the local defaults otherwise)."""
    settings = Settings.from_env()
    amqp = settings.amqp_uri
    scheme, rest = amqp.split("://", 1)
    return Infrastructure(
        database_url=settings.database_url,
        amqp_base=f"{scheme}://{rest.split('/', 1)[0]}",
        management_url=settings.rabbit_management_url,
    )


# The stack is tuned for load, not for tests: no rate limit in the way, the default key cache.
STACK_OVERRIDES = {
    "LEDGERDESK_RATE_LIMIT": "1000000",
    "LEDGERDESK_RATE_BURST": "1000000",
    "LEDGERDESK_KEY_CACHE_SECONDS": "30",
    "LEDGERDESK_DELIVERY_LIMIT": "5",
}


@dataclass
class Context:
    """What a section gets: the size it should run at and the worlds it may ask for."""

    quick: bool
    infrastructure: Infrastructure
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _stack: Stack | None = None

    def world(self, **overrides: str) -> Settings:
        """A world of its own (databases, vhost), dropped when the run ends."""
        return self.resources.enter_context(make_world(self.infrastructure, **overrides))

    def stack(self) -> Stack:
        """The whole platform as processes, started once and shared by the sections on it."""
        if self._stack is None:
            from tests.e2e.conftest import running_stack

            self._stack = self.resources.enter_context(
                running_stack(self.infrastructure, **STACK_OVERRIDES)
            )
        return self._stack

    def close(self) -> None:
        self.resources.close()


def cores() -> int:
    return os.cpu_count() or 1
