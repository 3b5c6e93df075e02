"""docs/security.md answers every item of the OWASP API Security Top 10 (2023), and every test it
names as proof exists: a renamed or deleted test must take its line with it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "security.md"
ITEMS = [f"API{n}:2023" for n in range(1, 11)]


def sections() -> dict[str, str]:
    text = GUIDE.read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.M)[1:]
    return {part.split(" ", 1)[0]: part for part in parts}


def cited() -> list[tuple[str, str | None]]:
    """Every ``tests/...py`` the guide names, with the test after ``::`` if it names one."""
    text = GUIDE.read_text(encoding="utf-8")
    return [
        (path, name)
        for path, name in re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?", text)
        for name in [name or None]
    ]


def test_every_item_has_a_section_in_order():
    assert list(sections()) == ITEMS


@pytest.mark.parametrize("item", [i for i in ITEMS if i != "API7:2023"])
def test_every_item_names_a_test(item):
    # API7 (SSRF) has nothing to test while no service fetches a client's URL; the guide says so.
    assert re.search(r"`tests/[\w/]+\.py", sections()[item]), item


@pytest.mark.parametrize(("path", "name"), cited(), ids=[f"{p}::{n}" for p, n in cited()])
def test_each_named_test_exists(path, name):
    source = ROOT / path
    assert source.is_file(), path
    if name is None:
        return
    tree = ast.parse(source.read_text(encoding="utf-8"))
    defined = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    assert name in defined, f"{path} has no {name}"
