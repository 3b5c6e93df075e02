"""The gateway publishes the audit public keys from configuration: in production it will not
start without ``LEDGERDESK_AUDIT_PUBLIC_KEYS`` rather than derive a key from the signing seed."""

from __future__ import annotations

import base64

from kernel.testing import world_env
from services import platform


def test_a_production_gateway_without_the_key_list_refuses_to_start(world, tmp_path):
    env = world_env(world)
    env.pop("LEDGERDESK_AUDIT_PUBLIC_KEYS", None)
    env.update(
        LEDGERDESK_ENV="production",
        LEDGERDESK_MASTER_KEY="k1:" + base64.b64encode(bytes(range(32))).decode(),
        LEDGERDESK_API_KEY_SECRET=base64.b64encode(bytes(range(40, 72))).decode(),
        LEDGERDESK_OPERATOR_TOKEN=base64.b64encode(bytes(range(80, 112))).decode(),
        LEDGERDESK_AUDIT_SIGNING_KEY=base64.b64encode(bytes(range(1, 33))).decode(),
        # accounts holds the relay's password: a development one would stop it first.
        LEDGERDESK_SMTP_PASSWORD="Rk7wQ2pZ9xL4vN1cT6yB3mH8jD5sF0gA",
    )
    platform.prepare(world)
    # The gateway reads retention's log of forgetting and reconciles its credentials with
    # accounts before it starts: both run too.
    processes = platform.start_processes(
        env, gateway_processes=1, only=("retention", "accounts", "gateway-1"), log_dir=tmp_path
    )
    try:
        code = processes["gateway-1"].wait(timeout=120)
    finally:
        platform.stop_processes(processes)
    log = (tmp_path / "gateway-1.log").read_text()
    assert code == 1, log
    assert "production needs LEDGERDESK_AUDIT_PUBLIC_KEYS" in log
