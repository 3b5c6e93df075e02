"""Erasure survives a restore: a service database (and its keystore) restored from a dump taken
before the erasure is brought back to "erased" before the service serves again."""

from __future__ import annotations

import subprocess
import uuid

import psycopg2
from psycopg2.extensions import parse_dsn

from kernel.db import drop_database, ensure_database
from kernel.testing import wait_until


def pg(tool: str, dsn: str, *args: str) -> subprocess.CompletedProcess:
    params = parse_dsn(dsn)
    return subprocess.run(
        [
            tool,
            "-h",
            params["host"],
            "-p",
            str(params.get("port", 5432)),
            "-U",
            params["user"],
            *args,
        ],
        check=True,
        capture_output=True,
    )


def test_a_restored_database_reads_erased_again_after_the_restore_step(stack, tmp_path):
    key = stack.sign_up()["api_key"]
    email = f"lee.{uuid.uuid4().hex[:6]}@example.com"
    lee = stack.call(
        "POST", "/v1/contacts", key=key, json={"name": "Lee Restored", "email": email}
    ).json()
    settings = stack.settings
    dumps = {}
    for purpose in ("", "keys"):  # the data and, worse still, the keys: both from before
        dumps[purpose] = tmp_path / f"accounts{purpose or '_data'}.dump"
        pg(
            "pg_dump",
            settings.database_dsn("accounts", purpose),
            "-Fc",
            "-f",
            str(dumps[purpose]),
            settings.database_name("accounts", purpose),
        )

    filed = stack.call(
        "POST",
        "/v1/privacy/requests",
        key=key,
        json={"type": "erasure", "subject": {"contact_id": lee["id"]}},
    ).json()
    wait_until(
        lambda: (
            stack.call("GET", f"/v1/privacy/requests/{filed['id']}", key=key).json()["status"]
            == "completed"
        ),
        what="the erasure",
    )
    assert stack.call("GET", f"/v1/contacts/{lee['id']}", key=key).json()["name"] == "[erased]"

    stack.stop("accounts")
    for purpose, dump in dumps.items():
        name = settings.database_name("accounts", purpose)
        drop_database(settings.database_url, name)
        ensure_database(settings.database_url, name)
        pg("pg_restore", settings.database_dsn("accounts", purpose), "-d", name, str(dump))
    conn = psycopg2.connect(settings.database_dsn("accounts"))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM contacts WHERE id = %s", (lee["id"],))
        assert cur.fetchone() == ("Lee Restored",)  # the restore really brought her back
    conn.close()

    # The documented restore step is starting the service: it re-applies retention's erasure
    # log in setup, before any entrypoint takes a request.
    stack.start("accounts")
    shown = wait_until(
        lambda: (
            (r := stack.call("GET", f"/v1/contacts/{lee['id']}", key=key)).status_code == 200
            and r.json()
        ),
        timeout=60,
        what="accounts to serve again",
    )
    assert shown["name"] == "[erased]" and shown["email"] == "[erased]"
    conn = psycopg2.connect(settings.database_dsn("accounts"))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT name, email FROM contacts WHERE id = %s", (lee["id"],))
        assert cur.fetchone() == ("[erased]", "[erased]")
        cur.execute(
            "SELECT payload::text FROM events WHERE stream_id = %s", (f"contact-{lee['id']}",)
        )
        assert all("Lee Restored" not in row[0] for row in cur.fetchall())
    conn.close()
    keys = psycopg2.connect(settings.database_dsn("accounts", "keys"))
    with keys, keys.cursor() as cur:
        cur.execute(
            "SELECT wrapped_key IS NULL FROM subject_keys WHERE subject_id = %s", (lee["id"],)
        )
        assert cur.fetchone() == (True,)  # the key that came back with the dump is gone again
    keys.close()
