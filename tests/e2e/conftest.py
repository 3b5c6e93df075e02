"""A whole platform as processes, in a world of its own, shared by one test module."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from kernel.config import Settings
from kernel.testing import Infrastructure, free_port, make_world, world_env
from services import platform

SIGNUP = {
    "company": "Acme Support Ltd",
    "region": "uk",
    "admin": {"name": "Ada Lovelace", "email": "ada@example.com"},
    "age_confirmed": True,
    "accept_policy_version": "2026-01",
}


@dataclass
class Stack:
    settings: Settings
    url: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def stop(self, name: str) -> None:
        """Stop one service gracefully, as an operator or a crash would take it away."""
        platform.stop_processes({name: self.processes.pop(name)})

    def start(self, name: str) -> None:
        self.processes.update(
            platform.start_processes(world_env(self.settings), gateway_processes=0, only=(name,))
        )

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any):
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return requests.request(method, self.url + path, headers=headers, timeout=15, **kwargs)

    def sign_up(self, **changes: Any) -> dict[str, Any]:
        """A new tenant; returns the signup answer (tenant, agent, api_key)."""
        response = self.call("POST", "/v1/signup", json={**SIGNUP, **changes})
        assert response.status_code == 201, response.text
        return response.json()

    def claim_key(self, key: str) -> str:
        """The agent's own key in place of ``key`` (one another admin made, say), as a colleague
        does on receiving the key they were created with: only such a key counts as a second
        pair of eyes on that admin's requests."""
        response = self.call("POST", "/v1/me/api-keys", key=key)
        assert response.status_code == 201, response.text
        return response.json()["api_key"]


@contextlib.contextmanager
def running_stack(
    infrastructure: Infrastructure,
    before_start: Callable[[Settings], None] | None = None,
    amqp_uris: Callable[[Settings], dict[str, str]] | None = None,
    **overrides: str,
) -> Iterator[Stack]:
    """A whole platform in a world of its own; ``before_start`` runs once the world is prepared
    and before any process starts (to bind a queue that sees every message, say); ``amqp_uris``
    then gives each kind of process its own broker URI (``platform.start_processes``)."""
    port = free_port()
    with make_world(infrastructure, LEDGERDESK_GATEWAY_PORT=str(port), **overrides) as settings:
        platform.prepare(settings)
        if before_start is not None:
            before_start(settings)
        processes = platform.start_processes(
            world_env(settings),
            amqp_uris=amqp_uris(settings) if amqp_uris is not None else None,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            assert platform.wait_until_ready(url, processes, timeout=60), "no stack"
            # The stack shares the dict: what it stops and restarts is what is stopped here.
            yield Stack(settings, url, processes)
        finally:
            platform.stop_processes(processes)
        assert all(p.returncode == 0 for p in processes.values()), "a service did not stop"


@pytest.fixture(scope="module")
def stack(infrastructure: Infrastructure) -> Iterator[Stack]:
    with running_stack(infrastructure) as running:
        yield running
