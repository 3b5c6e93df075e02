"""The image's lock (requirements.lock, `make lock`): it pins every package that
pyproject.toml's dependencies need, at pyproject's own versions, each with its hashes, and the
Dockerfile installs from it with hashes required."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)\s*\\$")
HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}(\s*\\)?$")


def locked() -> dict[str, tuple[str, int]]:
    """name -> (version, how many hashes), read as pip reads the file."""
    found: dict[str, tuple[str, int]] = {}
    current = None
    for number, line in enumerate((ROOT / "requirements.lock").read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pin = PIN.match(line)
        if pin:
            current = canonicalize_name(pin[1])
            assert current not in found, f"line {number}: {current} twice"
            found[current] = (pin[2], 0)
        else:
            assert current is not None and HASH.match(line), f"line {number}: {line!r}"
            version, hashes = found[current]
            found[current] = (version, hashes + 1)
    return found


def dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def closure(requirements: list[Requirement]) -> set[str]:
    """Every package the requirements need on the image's Linux and Python, through the
    installed packages' own metadata (their names; the lock pins the versions)."""
    environment = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux"}
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen and not extras:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(requirement.name) or []:
            needed = Requirement(text)
            if needed.marker is None or any(
                needed.marker.evaluate({**environment, "extra": extra}) for extra in extras or {""}
            ):
                todo.append((needed, frozenset(needed.extras)))
    return seen


def test_every_line_of_the_lock_is_an_exact_pin_with_its_hashes():
    pins = locked()
    assert len(pins) > 20
    for name, (version, hashes) in pins.items():
        assert hashes >= 1, f"{name}=={version} has no hash"


def test_the_lock_pins_pyprojects_dependencies_at_pyprojects_versions():
    pins = locked()
    for requirement in dependencies():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in the lock: make lock"
        (spec,) = requirement.specifier
        assert spec.operator == "==" and pins[name][0] == spec.version, (
            f"{name}: pyproject {spec}, lock {pins[name][0]}: make lock"
        )


def test_the_lock_covers_everything_the_dependencies_need():
    missing = closure(dependencies()) - set(locked())
    assert not missing, f"needed but not locked: {sorted(missing)}: make lock"


def test_the_image_installs_the_lock_with_hashes_required():
    dockerfile = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    runs = [line.strip() for line in dockerfile.splitlines() if line.strip().startswith("RUN ")]
    installs = [run for run in runs if " install " in run]
    assert any("--require-hashes" in run and "-r requirements.lock" in run for run in installs), (
        installs
    )
    # Nothing else installs a dependency: the package itself goes in without them.
    for run in installs:
        if "requirements.lock" not in run:
            assert "--no-deps" in run, run
