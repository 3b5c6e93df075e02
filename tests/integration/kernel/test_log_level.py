"""LEDGERDESK_LOG_LEVEL, in a real process (``python -m kernel.runner``): lines below it are not
written, and debug opens Ledgerdesk's own modules only, never a library's."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import requests

from kernel.runner import OWN_PACKAGES
from kernel.testing import free_port, wait_until, world_env

STARTED = "operations endpoints of recorder on port"


def ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def lines_until_ready(env: dict[str, str], log_level: str) -> list[dict]:
    """The JSON lines a service writes from its start until it is ready and stopped again."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kernel.runner", "tests.support.recorder:RecorderService"],
        env={
            **env,
            "LEDGERDESK_LOG_LEVEL": log_level,
            "LEDGERDESK_LOG_FORMAT": "json",
            "LEDGERDESK_OPS_PORT": str(port),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: ready(port), timeout=60, what=f"the recorder at {log_level}")
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=60)
    return [json.loads(line) for line in errors.splitlines() if line.startswith("{")]


def test_a_process_writes_no_line_below_its_log_level(world):
    env = world_env(world)

    at_info = lines_until_ready(env, "INFO")
    assert any(line["message"].startswith(STARTED) for line in at_info)
    assert {line["level"] for line in at_info} <= {"INFO", "WARNING", "ERROR"}

    at_warning = lines_until_ready(env, "warning")
    assert {line["level"] for line in at_warning} <= {"WARNING", "ERROR"}
    assert not any(line["message"].startswith(STARTED) for line in at_warning)


def test_debug_opens_the_platforms_own_lines_and_no_librarys(world):
    lines = lines_until_ready(world_env(world), "debug")
    assert any(line["message"].startswith(STARTED) for line in lines)
    # nameko writes debug lines as its containers start and stop ("starting <ServiceContainer
    # ...>"): none of a library's reaches the output, whatever they would quote.
    libraries = [
        line["logger"]
        for line in lines
        if line["level"] == "DEBUG" and line["logger"].split(".")[0] not in OWN_PACKAGES
    ]
    assert libraries == []
