"""The installed commands (pyproject's ``[project.scripts]``), run as processes the way an
installer writes them, against a real PostgreSQL: ``--help`` answers, a clean ledger exits 0
with JSON, a tampered one exits 1 naming the first bad entry, an unreachable database exits 3
(not 1: nothing was decided), a usage error 2, and the progress bar, on a terminal only, counts
to the number of entries the walk reads.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import tomllib
from pathlib import Path

import pytest
from pip._vendor.distlib.scripts import ScriptMaker

from kernel.cli import Exit
from kernel.signed_note import EPOCH
from kernel.stores import prepare_databases
from kernel.testing import world_env
from services.audit.ledger import open_ledger
from tests.integration.audit.test_ledger import MIGRATIONS, record_all, set_row, tamper, things

ROOT = Path(__file__).resolve().parents[3]
UNREACHABLE_DATABASE = "postgresql://postgres@127.0.0.1:1/postgres"


@pytest.fixture(scope="module")
def commands(tmp_path_factory) -> dict[str, Path]:
    """Each console script of pyproject.toml, written by the code pip installs them with."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    bin_dir = tmp_path_factory.mktemp("bin")
    maker = ScriptMaker(None, str(bin_dir))
    maker.executable = sys.executable
    maker.variants = {""}
    for name, target in scripts.items():
        maker.make(f"{name} = {target}")
    return {name: bin_dir / name for name in scripts}


def run(
    command: Path, *args: str, env: dict[str, str] | None = None, stderr: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(command), *args],
        cwd=ROOT,
        env={**(env or os.environ), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        timeout=120,
    )


@pytest.fixture
def prepared(world):
    prepare_databases(world, "audit", MIGRATIONS)
    return world


def test_the_commands_are_the_operators_and_the_auditors():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {
        "ledgerdesk": "services.platform:main",
        "ledgerdesk-audit": "services.audit.cli:main",
    }


@pytest.mark.parametrize(
    "name, args, mentions",
    [
        ("ledgerdesk", [], ["prepare", "dead-letters", "send-mail", "3 unreachable"]),
        ("ledgerdesk", ["dead-letters"], ["replay", "3 unreachable"]),
        ("ledgerdesk", ["send-mail"], ["--until-empty"]),
        ("ledgerdesk-audit", [], ["verify", "export", "offline", "1 failed (tampered"]),
        ("ledgerdesk-audit", ["verify"], ["--resume"]),
        ("ledgerdesk-audit", ["offline"], ["--keys", "1 tampered"]),
    ],
)
def test_help_answers_and_exits_0(commands, name, args, mentions):
    done = run(commands[name], *args, "--help")
    assert done.returncode == 0, done.stderr
    for word in mentions:
        assert word in done.stdout


def test_a_usage_error_exits_2(commands):
    assert run(commands["ledgerdesk-audit"], "verfy").returncode == Exit.USAGE
    assert run(commands["ledgerdesk"], "dead-letters", "replay").returncode == Exit.USAGE


def test_a_clean_ledger_exits_0_with_json_and_a_tampered_one_exits_1(commands, prepared):
    ledger = open_ledger(prepared)
    # No checkpoint: one over the edit would narrow the verdict to the whole signed prefix.
    record_all(ledger, things(8))
    env = world_env(prepared)

    clean = run(commands["ledgerdesk-audit"], "verify", env=env)
    assert clean.returncode == Exit.OK, clean.stderr
    report = json.loads(clean.stdout)
    assert (report["ok"], report["entries"], report["checkpoints"]) == (True, 8, 0)

    tamper(ledger, lambda cur: set_row(cur, 3, content=b'{"edited": true}'))
    tampered = run(commands["ledgerdesk-audit"], "verify", env=env)
    assert tampered.returncode == Exit.FAILED, tampered.stderr
    report = json.loads(tampered.stdout)
    assert (report["ok"], report["first_bad_seq"]) == (False, 3)
    assert "TAMPERED: first bad seq 3" in tampered.stderr


def test_an_unreachable_database_exits_3_not_1(commands, prepared):
    env = {**world_env(prepared), "LEDGERDESK_DATABASE_URL": UNREACHABLE_DATABASE}
    for command, args in [
        (commands["ledgerdesk-audit"], ["verify"]),
        (commands["ledgerdesk-audit"], ["replay"]),
        (commands["ledgerdesk"], ["prepare"]),
        (commands["ledgerdesk"], ["send-mail", "tickets", "--until-empty"]),
    ]:
        done = run(command, *args, env=env)
        assert done.returncode == Exit.UNREACHABLE, (args, done.stderr)
        assert "unreachable: PostgreSQL is not reachable at 127.0.0.1:1" in done.stderr
        assert "Traceback" not in done.stderr
        assert done.stdout == ""


def test_an_unreachable_broker_exits_3(commands, world):
    env = {**world_env(world), "LEDGERDESK_AMQP_URI": "amqp://guest:guest@127.0.0.1:1/"}
    done = run(commands["ledgerdesk"], "dead-letters", "list", env=env)
    assert done.returncode == Exit.UNREACHABLE, done.stderr
    assert "unreachable" in done.stderr and "Traceback" not in done.stderr
    # run checks both before it starts anything, and says which it could not reach.
    started = run(commands["ledgerdesk"], "run", env=env)
    assert started.returncode == Exit.UNREACHABLE, started.stderr
    assert "Ledgerdesk cannot start" in started.stderr and "RabbitMQ" in started.stderr


def on_a_terminal(
    command: Path, *args: str, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], str]:
    """The command run with stderr a terminal (stdout a pipe); what the terminal showed."""
    parent, child = pty.openpty()
    # A terminal 100 columns wide: a new pty has none, and the bar would fit in nothing.
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        done = run(command, *args, env=env, stderr=child)
    finally:
        os.close(child)
    shown = b""
    while True:
        try:
            chunk = os.read(parent, 4096)
        except OSError:  # the terminal's other end is closed: all was read
            break
        if not chunk:
            break
        shown += chunk
    os.close(parent)
    return done, shown.decode(errors="replace")


def test_the_progress_bar_counts_to_the_entries_walked_on_a_terminal_only(commands, prepared):
    ledger = open_ledger(prepared)
    record_all(ledger, things(12))
    env = world_env(prepared)

    piped = run(commands["ledgerdesk-audit"], "verify", env=env)
    assert piped.returncode == 0, piped.stderr
    assert "12/12" not in piped.stderr  # a pipe or a log file gets no bar

    # stderr a terminal, stdout still a pipe: the bar on the one, the JSON clean on the other.
    on_terminal, shown = on_a_terminal(commands["ledgerdesk-audit"], "verify", env=env)
    assert on_terminal.returncode == 0
    assert json.loads(on_terminal.stdout)["entries"] == 12
    assert "12/12" in shown

    # replay: the ledger's count when it streams them all; no total claimed when filtered.
    replayed, shown = on_a_terminal(commands["ledgerdesk-audit"], "replay", env=env)
    assert len(replayed.stdout.splitlines()) == 12 and "12/12" in shown
    filtered, shown = on_a_terminal(
        commands["ledgerdesk-audit"], "replay", "--type", "thing_happened", env=env
    )
    assert len(filtered.stdout.splitlines()) == 12
    assert "12entry" in shown.replace(" ", "") and "/12" not in shown


class Watched:
    """What a verification run tells whoever watches it (the command line's bar)."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.marks: list[int] = []

    def start(self, total: int) -> None:
        self.total = total

    def reached(self, entries: int) -> None:
        self.marks.append(entries)


def test_the_progress_total_is_what_the_walk_reads_from_zero_or_resumed(prepared):
    ledger = open_ledger(prepared)
    record_all(ledger, things(7))
    first = Watched()
    assert ledger.verify(progress=first)["ok"] is True
    assert (first.total, first.marks[-1]) == (7, 7)

    record_all(ledger, things(5))
    resumed = Watched()
    assert ledger.verify(from_zero=False, progress=resumed)["ok"] is True
    # Only what was appended since the last intact run is read, and counted.
    assert (resumed.total, resumed.marks[-1]) == (5, 5)

    again = Watched()
    assert ledger.verify(progress=again)["ok"] is True
    assert (again.total, again.marks[-1]) == (12, 12)


def test_the_offline_verifier_counts_to_the_exports_entries_and_exits_1_when_tampered(
    commands, prepared, tmp_path
):
    ledger = open_ledger(prepared)
    record_all(ledger, things(9))
    env = world_env(prepared)
    exported = run(commands["ledgerdesk-audit"], "export", str(tmp_path), env=env)
    assert exported.returncode == 0, exported.stderr
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps(
            {
                "origin": prepared.audit_origin,
                "keys": [
                    {
                        "public_key": ledger.signer.public_key_b64,
                        "valid_from": EPOCH.isoformat(),
                        "valid_until": None,
                    }
                ],
            }
        )
    )
    # No settings at all: the public keys alone.
    bare = {"PATH": "/usr/bin:/bin"}
    done, shown = on_a_terminal(
        commands["ledgerdesk-audit"], "offline", str(tmp_path), "--keys", str(keys), env=bare
    )
    assert done.returncode == Exit.OK, shown
    assert json.loads(done.stdout)["entries"] == 9
    assert "9/9" in shown

    export = tmp_path / "audit-export.jsonl"
    lines = export.read_text().splitlines()
    last = json.loads(lines[-1])
    last["content"] = last["content"].replace("t8", "t0")
    export.write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    tampered = run(
        commands["ledgerdesk-audit"], "offline", str(tmp_path), "--keys", str(keys), env=bare
    )
    assert tampered.returncode == Exit.FAILED, tampered.stderr
    assert json.loads(tampered.stdout)["ok"] is False
    missing = run(
        commands["ledgerdesk-audit"],
        "offline",
        str(tmp_path / "none"),
        "--keys",
        str(keys),
        env=bare,
    )
    assert missing.returncode == Exit.USAGE
