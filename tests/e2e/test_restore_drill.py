"""The restore drill: every database of a running platform backed up by the backup jobs' own
script (deploy/kubernetes/base/backups.yaml, with the environment each CronJob gives it), a
contact erased after the backups, then a disaster: every database restored from the newest of
its dumps with docs/operations.md's `pg_restore`, and the whole platform started again on them.
Nothing of the erased contact may come back (through the API or anywhere in any database or
queue), and the contact kept must be whole.

The jobs run as their schedules would over one night: every database's nightly dump, then the
erasure, then the jobs that run every hour (retention's, which holds the log of forgetting the
services re-apply when they start: docs/restore.md), then the disaster. `make drill` runs it.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg2.extensions import make_dsn

from kernel.testing import Infrastructure, wait_until, world_env
from services import platform
from tests.deploy.manifests import find, pod_spec
from tests.deploy.test_kubernetes_backups import (
    backup_env,
    backups,
    claim_of,
    firings,
    longest_gap_days,
)
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.helpers import ok
from tests.support import sweep

OVERLAY = "production"
HOUR = 1 / 24


@pytest.fixture(scope="module")
def stack(infrastructure: Infrastructure) -> Iterator[Stack]:
    with running_stack(infrastructure) as running:
        yield running


class Jobs:
    """The overlay's backup CronJobs, each run here as Kubernetes would run it: its script, its
    environment (the Secret's LEDGERDESK_DATABASE_URL being the stack's server), its volume a
    folder of ``root`` named after the claim."""

    def __init__(self, stack: Stack, root: Path) -> None:
        self.stack, self.root = stack, root
        # The ConfigMap's files, where the CronJobs mount it.
        self.scripts = root / "scripts"
        self.scripts.mkdir()
        for name, text in find(OVERLAY, "ConfigMap", "ledgerdesk-backup")["data"].items():
            (self.scripts / name).write_text(text)
        prefix = find(OVERLAY, "ConfigMap", "ledgerdesk-config")["data"][
            "LEDGERDESK_DATABASE_PREFIX"
        ]
        # The overlay's database names, in this stack's world.
        self.jobs = {
            stack.settings.database_prefix + name.removeprefix(prefix): job
            for name, job in backups(OVERLAY).items()
        }

    def volume(self, database: str) -> Path:
        return self.root / claim_of(self.jobs[database]) / database

    def run(self, database: str) -> None:
        job = self.jobs[database]
        (container,) = pod_spec(job)["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "scripts"]
        command = [
            str(self.scripts / Path(part).relative_to(mount["mountPath"]))
            if part.startswith(mount["mountPath"] + "/")
            else part
            for part in container["command"]
        ]
        env = {
            "PATH": os.environ["PATH"],
            **backup_env(job),
            "BACKUP_DATABASE": database,
            "LEDGERDESK_DATABASE_URL": self.stack.settings.database_url,
            # The volume, mounted where the script's default puts the dumps.
            "BACKUP_ROOT": str(self.root / claim_of(job)),
        }
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (database, done.stderr)

    def newest(self, database: str) -> Path:
        """What a restore takes: the newest complete dump of the database."""
        return max(self.volume(database).glob("*.dump"))


def aged(folder: Path, days: float) -> Path:
    """A dump the job wrote ``days`` ago, named and dated as it would be."""
    then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)
    path = folder / then.strftime("%Y%m%dT%H%M%SZ.dump")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"a dump of long ago")
    os.utime(path, (then.timestamp(), then.timestamp()))
    return path


def restore(stack: Stack, database: str, dump: Path) -> None:
    """docs/operations.md's restore command, into the database the service runs on."""
    dsn = make_dsn(stack.settings.server_dsn, dbname=database)
    subprocess.run(
        ["pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={dsn}", str(dump)],
        check=True,
        capture_output=True,
        timeout=120,
    )


def found(stack: Stack, infrastructure: Infrastructure, canaries: list[str]) -> dict[str, Any]:
    """Where the canaries are, in every database of the world and every message of its queues."""
    return sweep.find(
        canaries,
        [
            *sweep.database_texts(stack.settings),
            *sweep.queue_texts(infrastructure, stack.settings),
        ],
    )


def test_a_platform_restored_from_its_backup_jobs_brings_back_nothing_erased(
    stack: Stack, infrastructure: Infrastructure, tmp_path: Path
) -> None:
    key = stack.sign_up()["api_key"]
    tag = uuid.uuid4().hex[:8]
    people = {
        who: ok(
            stack.call(
                "POST",
                "/v1/contacts",
                key=key,
                json={"name": f"{who} Drill{tag}", "email": f"{who.lower()}.{tag}@example.com"},
            ),
            201,
        )
        for who in ("Erin", "Kept")
    }
    erin, kept = people["Erin"], people["Kept"]
    erin_canaries = [erin["name"], erin["email"]]
    kept_canaries = [kept["name"], kept["email"]]

    jobs = Jobs(stack, tmp_path)
    assert set(jobs.jobs) == set(sweep.databases(stack.settings))  # every database has a job
    # Dumps of eight days ago: past a keystore's retention (7 days), within the data's (90).
    planted = {database: aged(jobs.volume(database), 8) for database in jobs.jobs}

    # The night's backups, in the order of their schedules.
    def first_run(database: str) -> Any:
        return firings(jobs.jobs[database]["spec"]["schedule"], days=1)[0]

    for database in sorted(jobs.jobs, key=first_run):
        jobs.run(database)
    for database, old in planted.items():
        keep = int(backup_env(jobs.jobs[database])["BACKUP_KEEP_DAYS"])
        assert old.exists() == (keep >= 8), database
        assert jobs.newest(database) != old

    # The erasure, after the nightly backups hold Erin.
    filed = ok(
        stack.call(
            "POST",
            "/v1/privacy/requests",
            key=key,
            json={"type": "erasure", "subject": {"contact_id": erin["id"]}},
        ),
        202,
    )
    wait_until(
        lambda: (
            stack.call("GET", f"/v1/privacy/requests/{filed['id']}", key=key).json()["status"]
            == "completed"
        ),
        timeout=60,
        what="the erasure",
    )
    erased = ok(stack.call("GET", f"/v1/contacts/{erin['id']}", key=key))
    assert (erased["name"], erased["email"]) == ("[erased]", "[erased]")

    # The hour after: the jobs that run every hour take their next dump.
    hourly = [
        d for d, job in jobs.jobs.items() if longest_gap_days(job["spec"]["schedule"]) <= HOUR
    ]
    assert hourly == [stack.settings.database_name("retention")]
    for database in hourly:
        jobs.run(database)

    # The disaster: every process down, every database restored from its newest dump.
    platform.stop_processes(stack.processes)
    stack.processes.clear()
    for database in jobs.jobs:
        restore(stack, database, jobs.newest(database))
    # The restore really brought Erin back (a read model holds her in plaintext).
    assert set(found(stack, infrastructure, erin_canaries)) == set(erin_canaries)

    stack.processes.update(platform.start_processes(world_env(stack.settings)))
    assert platform.wait_until_ready(stack.url, stack.processes, timeout=120), "no stack"

    again = ok(stack.call("GET", f"/v1/contacts/{erin['id']}", key=key))
    assert (again["name"], again["email"]) == ("[erased]", "[erased]")
    listed = ok(stack.call("GET", "/v1/contacts?limit=200", key=key))["items"]
    assert all(c["name"] != erin["name"] and c["email"] != erin["email"] for c in listed)
    assert found(stack, infrastructure, erin_canaries) == {}
    # The contact kept is whole, through the API and in the stores.
    whole = ok(stack.call("GET", f"/v1/contacts/{kept['id']}", key=key))
    assert (whole["name"], whole["email"]) == (kept["name"], kept["email"])
    assert set(found(stack, infrastructure, kept_canaries)) == set(kept_canaries)
