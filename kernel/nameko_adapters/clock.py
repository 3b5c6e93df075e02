"""The time, as a dependency: entrypoints ask it rather than the system directly, so a test or a
tool that runs a handler knows which moment the handler acts on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from nameko.extensions import DependencyProvider


class Clock(DependencyProvider):
    """A worker's ``self.clock()``: now, in UTC."""

    def get_dependency(self, worker_ctx: Any) -> Callable[[], dt.datetime]:
        return lambda: dt.datetime.now(dt.UTC)
