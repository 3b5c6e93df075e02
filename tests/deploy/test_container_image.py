"""The Dockerfile, read as Docker would, and its health check run for real."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePath

import pytest

from kernel.testing import free_port

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_base_image_is_pinned_and_the_image_runs_as_a_non_root_user() -> None:
    steps = instructions()
    args = dict(a.split("=", 1) for word, a in steps if word == "ARG" and "=" in a)
    bases = [a.split()[0] for word, a in steps if word == "FROM"]
    assert len(bases) >= 2, "multi-stage: the build tools stay out of the final image"
    for base in bases:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        name, _, tag = image.partition(":")
        # An exact patch release (3.11.13-...), never a moving tag like "latest" or "3.11".
        assert re.match(r"\d+\.\d+\.\d+-", tag), image
    users = [a for word, a in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert users[-1].split(":")[0].isdigit(), "numeric, so runAsNonRoot can check it"
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["python", "-m"]


def test_the_build_context_holds_what_the_image_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, arguments in instructions():
        if word == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def ops_server(status: int) -> Iterator[int]:
    handler = type("Health", (_Health,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", free_port()), handler)
    # A short poll: shutdown() waits for the loop to notice, half a second by default.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def healthcheck(port: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """The image's check, as its exit status: ``python -c`` fails exactly when the code raises,
    so the code runs here rather than in a new interpreter each time."""
    (arguments,) = [a for word, a in instructions() if word == "HEALTHCHECK"]
    command = json.loads(arguments[arguments.index("CMD") + 3 :])
    assert command[:2] == ["python", "-c"], "the image has no curl: the check is python"
    monkeypatch.setenv("LEDGERDESK_OPS_PORT", str(port))
    try:
        exec(compile(command[2], "HEALTHCHECK", "exec"), {})
    except Exception:
        return 1
    return 0


def test_the_health_check_passes_on_a_healthy_process_and_fails_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with ops_server(200) as port:
        assert healthcheck(port, monkeypatch) == 0
    with ops_server(503) as port:
        assert healthcheck(port, monkeypatch) != 0
    assert healthcheck(free_port(), monkeypatch) != 0  # nothing listening: the process is gone


def test_every_file_the_packages_need_is_package_data_so_the_image_has_it() -> None:
    """The image installs the package (not editable), so a migration, a console asset or any
    other non-Python file that package-data does not name would be missing from it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["*"]
    missing = []
    for top in ("kernel", "services", "gateway"):
        for path in (ROOT / top).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            # package-data globs are relative to a package's folder: any folder above the file.
            relative = path.relative_to(ROOT)
            candidates = [PurePath(*relative.parts[n:]) for n in range(1, len(relative.parts))]
            if not any(
                len(c.parts) == len(PurePath(p).parts) and c.match(p)
                for c in candidates
                for p in patterns
            ):
                missing.append(str(relative))
    assert missing == []
