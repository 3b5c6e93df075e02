"""docs/operations.md's master-key rotation script, run as the guide says, on a real keystore."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kernel import migrate
from kernel.config import Settings
from kernel.crypto.keystore import Keystore
from kernel.crypto.primitives import MasterKeyMissing
from kernel.db import Database, ensure_database
from kernel.testing import world_env

ROOT = Path(__file__).resolve().parents[2]
OLD = "k2026a:" + base64.b64encode(b"o" * 32).decode()
NEW = "k2026b:" + base64.b64encode(b"n" * 32).decode()


def rotation_script() -> str:
    guide = (ROOT / "docs" / "operations.md").read_text()
    section = guide.split("## Rotate the master key", 1)[1].split("\n## ", 1)[0]
    (script,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return script


def test_the_guides_rotation_rewraps_tenant_keys_so_the_old_master_key_can_go(
    world: Settings,
) -> None:
    service = "accounts"
    ensure_database(world.database_url, world.database_name(service, "keys"))
    migrate.migrate(world.database_dsn(service, "keys"), [migrate.KEYSTORE])
    database = Database(world.database_dsn(service, "keys"), maxconn=2)
    try:
        old = Keystore(database, Settings.from_env({"LEDGERDESK_MASTER_KEY": OLD}).master_keys, 0)
        tenant, subject, erased = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        key = old.subject_key(tenant, subject)
        old.subject_key(erased, uuid.uuid4())
        old.shred_tenant(erased)

        only_new = Settings.from_env({"LEDGERDESK_MASTER_KEY": NEW}).master_keys
        with pytest.raises(MasterKeyMissing):  # dropping the old key before rotating locks out
            Keystore(database, only_new, 0).subject_key(tenant, subject, create=False)

        # Step 1 then 2 of the guide: the new key first, then the script in the service's env.
        env = {**world_env(world), "LEDGERDESK_MASTER_KEY": f"{NEW},{OLD}"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        for expected in (1, 0):  # the erased tenant has no key to re-wrap; a rerun does nothing
            run = subprocess.run(
                [sys.executable, "-", service],
                input=rotation_script(),
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert run.returncode == 0, run.stderr
            assert f"{service}: {expected} tenant keys re-wrapped under 'k2026b'" in run.stdout

        # Step 4: the old key is gone from the configuration, and the data still opens.
        assert Keystore(database, only_new, 0).subject_key(tenant, subject, create=False) == key
        with database.transaction() as cur:
            cur.execute(
                "SELECT master_key_id, count(*) FROM tenant_keys"
                " WHERE wrapped_key IS NOT NULL GROUP BY 1"
            )
            assert cur.fetchall() == [("k2026b", 1)]
    finally:
        database.close()


def test_the_guides_restore_drill_command_runs_the_drill() -> None:
    """The drill needs a whole platform and minutes, and `make test` runs its module already:
    here the guide's one line is shown to run that module (make's dry run), not run twice."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    section = guide.split("**The restore drill**", 1)[1].split("\n## ", 1)[0]
    (command,) = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    drill = ROOT / "tests" / "e2e" / "test_restore_drill.py"
    assert drill.is_file()
    planned = subprocess.run(
        # Under `make test` the outer make's flags would have it name the directories it enters.
        ["make", "--dry-run", "--no-print-directory", *command.split()[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert command.split()[0] == "make"
    assert planned[-1].endswith(f"-m pytest {drill.relative_to(ROOT)}"), planned
