"""The offline verifier needs nothing but the export and the public keys: importing it loads no
settings, database driver, broker client or signing code that holds the seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FORBIDDEN = (
    "kernel.config",
    "kernel.signing",
    "kernel.db",
    "psycopg2",
    "nameko",
    "kombu",
    "services.audit.ledger",
)


def test_the_offline_verifier_imports_no_settings_database_or_seed():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; import services.audit.offline_verify;"
            " print(json.dumps(sorted(sys.modules)))",
        ],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "services.audit.offline_verify" in loaded
    assert [m for m in loaded if m.startswith(FORBIDDEN)] == []
