"""deploy/kubernetes's backups: a CronJob per database the platform has, the keystores on their
own volume and a shorter cycle, retentions within the promises, and the job's script run for
real against PostgreSQL (a dump pg_restore takes back, old dumps deleted, nothing deleted when
the dump fails)."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from kernel.config import Settings
from kernel.db import drop_database, ensure_database
from kernel.testing import Infrastructure
from services.platform import SERVICES
from tests.deploy.manifests import OVERLAYS, find, of_kind, pod_spec

# The design's promise: backups forget within a year.
DATA_PROMISE_DAYS = 365
FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def cron_field(text: str, low: int, high: int) -> set[int]:
    """One field of a standard five-field cron expression: *, lists, ranges and steps."""
    values: set[int] = set()
    for part in text.split(","):
        spread, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if spread == "*":
            start, end = low, high
        elif "-" in spread:
            start, end = (int(x) for x in spread.split("-"))
        else:
            start = end = int(spread)
            if step_text:
                end = high
        if not (low <= start <= end <= high) or step < 1:
            raise ValueError(f"{part!r} is not within {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def firings(schedule: str, days: int = 62) -> list[datetime.datetime]:
    """When the schedule runs over ``days`` days from 2026-01-01 (UTC), as cron reads it: the
    day matches its day of month or its day of week when both are restricted."""
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"{schedule!r} is not five fields")
    minute, hour, day, month, weekday = (
        cron_field(f, low, high) for f, (low, high) in zip(fields, FIELDS, strict=True)
    )
    both = fields[2] != "*" and fields[4] != "*"
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    found = []
    for step in range(days * 24 * 60):
        at = start + datetime.timedelta(minutes=step)
        day_ok = (
            (at.day in day or at.isoweekday() % 7 in weekday)
            if both
            else (at.day in day and at.isoweekday() % 7 in weekday)
        )
        if at.minute in minute and at.hour in hour and at.month in month and day_ok:
            found.append(at)
    return found


def longest_gap_days(schedule: str) -> float:
    times = firings(schedule)
    assert len(times) >= 2, f"{schedule!r} runs less than twice in two months"
    return max((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)) / 86400


def test_the_cron_reading_is_cron_s() -> None:
    assert longest_gap_days("10 1 * * *") == 1
    assert longest_gap_days("0 */6 * * *") == 0.25
    assert longest_gap_days("0 3 * * 0") == 7
    with pytest.raises(ValueError):
        firings("61 1 * * *")
    with pytest.raises(ValueError):
        firings("0 1 * *")


def backup_env(job: dict[str, Any]) -> dict[str, str]:
    (container,) = pod_spec(job)["containers"]
    return {v["name"]: v["value"] for v in container["env"] if "value" in v}


def claim_of(job: dict[str, Any]) -> str:
    (volume,) = [v for v in pod_spec(job)["volumes"] if v["name"] == "backups"]
    return volume["persistentVolumeClaim"]["claimName"]


def backups(overlay: str) -> dict[str, dict[str, Any]]:
    """The backup CronJobs by the database each dumps."""
    return {
        backup_env(job)["BACKUP_DATABASE"]: job
        for job in of_kind(overlay, "CronJob").values()
        if job["metadata"]["name"].startswith("ledgerdesk-backup-")
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_database_of_the_platform_has_a_backup_job(overlay: str) -> None:
    config = find(overlay, "ConfigMap", "ledgerdesk-config")["data"]
    settings = Settings.from_env(
        {"LEDGERDESK_DATABASE_PREFIX": config["LEDGERDESK_DATABASE_PREFIX"]}
    )
    # Each service's store and keystore (kernel/stores.py), the gateway's too.
    databases = {
        settings.database_name(owner, purpose)
        for owner in [*SERVICES, "gateway"]
        for purpose in ("", "keys")
    }
    assert set(backups(overlay)) == databases


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keystores_are_kept_apart_and_forgotten_within_the_deadlines(overlay: str) -> None:
    deadline = Settings().privacy_deadline_days
    keystores, data = [], []
    for database, job in backups(overlay).items():
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        assert job["spec"]["timeZone"] == "Etc/UTC"
        keep = int(backup_env(job)["BACKUP_KEEP_DAYS"])
        # find -mtime +N deletes a dump once it is N + 1 whole days old, at the next run.
        outlives = keep + 1 + longest_gap_days(job["spec"]["schedule"])
        (keystores if database.endswith("_keys") else data).append((job, outlives))
        (container,) = pod_spec(job)["containers"]
        assert container["command"] == ["sh", "/scripts/backup.sh"]
    assert len(keystores) == len(data)
    assert max(outlives for _, outlives in data) <= DATA_PROMISE_DAYS
    # A shredded key is gone from every backup within the erasure deadline, long before data.
    assert max(outlives for _, outlives in keystores) <= deadline
    assert max(o for _, o in keystores) < min(o for _, o in data)
    # Its own volume: what a snapshot or copy of the data volume keeps holds no key.
    assert {claim_of(job) for job, _ in keystores} == {"ledgerdesk-keystore-backups"}
    assert {claim_of(job) for job, _ in data} == {"ledgerdesk-backups"}
    claims = of_kind(overlay, "PersistentVolumeClaim")
    assert {"ledgerdesk-backups", "ledgerdesk-keystore-backups"} <= set(claims)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_jobs_of_one_volume_never_start_together(overlay: str) -> None:
    starts: dict[tuple[str, str], str] = {}
    for database, job in backups(overlay).items():
        slot = (claim_of(job), job["spec"]["schedule"])
        assert slot not in starts, (database, starts.get(slot))
        starts[slot] = database


# ------------------------------------------------------------------ the script, for real


def script(tmp_path: Path) -> Path:
    path = tmp_path / "backup.sh"
    path.write_text(find("production", "ConfigMap", "ledgerdesk-backup")["data"]["backup.sh"])
    return path


def run_backup(
    tmp_path: Path, database: str, url: str, keep: int = 7
) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "BACKUP_DATABASE": database,
        "BACKUP_KEEP_DAYS": str(keep),
        "BACKUP_ROOT": str(tmp_path / "backups"),
        "LEDGERDESK_DATABASE_URL": url,
    }
    return subprocess.run(
        ["sh", str(script(tmp_path))], env=env, capture_output=True, text=True, timeout=120
    )


def aged(path: Path, days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"an older dump")
    then = datetime.datetime.now().timestamp() - days * 86400
    os.utime(path, (then, then))
    return path


def with_database(url: str, name: str) -> str:
    """``url`` (a libpq URI) naming database ``name``, its query kept."""
    base, _, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_the_backup_job_dumps_restorably_and_enforces_its_retention(
    infrastructure: Infrastructure, tmp_path: Path
) -> None:
    server = infrastructure.database_url
    name, restored = f"ldbackup_{uuid.uuid4().hex[:10]}", f"ldrestore_{uuid.uuid4().hex[:10]}"
    ensure_database(server, name)
    try:
        with psycopg2.connect(with_database(server, name)) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (id int PRIMARY KEY, what text)")
            cur.execute("INSERT INTO kept VALUES (1, 'in the dump')")
        conn.close()
        folder = tmp_path / "backups" / name
        old = aged(folder / "20250101T011000Z.dump", days=9)
        recent = aged(folder / "20260101T011000Z.dump", days=3)
        partial = aged(folder / ".20250101T011000Z.partial", days=9)

        # With a query string, as a DSN with sslmode= has: the database is put before it.
        url = with_database(server, "postgres")
        url += ("&" if "?" in url else "?") + "connect_timeout=10"
        done = run_backup(tmp_path, name, url, keep=7)
        assert done.returncode == 0, done.stderr
        (dump,) = set(folder.glob("*.dump")) - {recent}
        assert f"backed up {name} to {dump.name}" in done.stdout
        assert not old.exists() and not partial.exists() and recent.exists()
        assert not list(folder.glob(".*.partial"))

        # The drill: the dump restores into an empty database with what was there.
        ensure_database(server, restored)
        subprocess.run(
            ["pg_restore", "--no-owner", f"--dbname={with_database(server, restored)}", str(dump)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with psycopg2.connect(with_database(server, restored)) as conn, conn.cursor() as cur:
            cur.execute("SELECT id, what FROM kept")
            assert cur.fetchall() == [(1, "in the dump")]
        conn.close()

        # A dump that fails deletes nothing and leaves no dump behind.
        older = aged(folder / "20250102T011000Z.dump", days=9)
        before = set(folder.glob("*.dump"))
        failed = run_backup(tmp_path, name, "postgresql://postgres@127.0.0.1:1/postgres", keep=7)
        assert failed.returncode != 0
        assert set(folder.glob("*.dump")) == before and older.exists()
    finally:
        drop_database(server, restored)
        drop_database(server, name)


def test_the_data_map_says_where_the_backups_are_and_how_long_they_stay() -> None:
    from services.datamap import BACKUPS

    rows = {row.split("`")[1]: row for row in BACKUPS if row.startswith("| volume")}
    for database, job in backups("production").items():
        row = rows[claim_of(job)]
        assert f"older than {backup_env(job)['BACKUP_KEEP_DAYS']} days" in row, database
