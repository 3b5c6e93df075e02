"""README.md's "Try it" walkthrough, run as written against a running stack: each command in turn
through the shell, its answer held to the one the README shows.

The README elides with ``…``: a value it shortens (an id, a key) matches any value and is
remembered, so that a later command naming it names the real one; ``{…}`` matches any value and
a trailing ``, …}`` any further members. An answer with an ``HTTP/1.1`` line is held to that
status and those headers; one that is a problem to the status in its body; any other is a
success (2xx). A read is repeated until its answer is the README's (a privacy request completes
a moment after it is filed), as a reader would repeat it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel.testing import wait_until
from tests.e2e.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]
ELIDED = "…"
README_HOST = "localhost:8000"
# What curl writes after the answer, so that the status is known however the README calls it.
STATUS_OUT = r"\n%{http_code}"


@dataclass
class Step:
    command: str  # as the README writes it, continuation lines and all
    answer: str  # as the README shows it ("" where it shows none)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # by lower-case name
    body: Any


def walkthrough() -> list[Step]:
    """The commands of the README's "Try it" section, each with the answer shown under it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    steps = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            lines = chunk.rstrip("\n").split("\n")
            # A command goes on over indented lines (inside its quotes, or after a backslash).
            end = 1
            while end < len(lines) and lines[end].startswith("    "):
                end += 1
            steps.append(Step("\n".join(lines[:end]), "\n".join(lines[end:]).strip()))
    return steps


def documented(text: str) -> Any:
    """A JSON answer as the README shows it, its elisions made JSON: ``{…}`` the value
    ``"…"``, a trailing ``…`` member the member ``"…": "…"``."""
    text = text.replace("{" + ELIDED + "}", json.dumps(ELIDED))
    text = re.sub(r",\s*" + ELIDED + r"\s*}", f', "{ELIDED}": "{ELIDED}"' + "}", text)
    return json.loads(text)


def matches(shown: Any, real: Any, seen: dict[str, str]) -> bool:
    """Whether ``real`` is what the README shows; the real values of elided ones go in
    ``seen``, by the text the README shows for them."""
    if isinstance(shown, str) and ELIDED in shown:
        if shown != ELIDED:
            seen[shown] = real
        return True
    if isinstance(shown, dict):
        if not isinstance(real, dict):
            return False
        named = {k: v for k, v in shown.items() if k != ELIDED}
        if ELIDED not in shown and set(real) != set(named):
            return False
        return all(k in real and matches(v, real[k], seen) for k, v in named.items())
    if isinstance(shown, list):
        return (
            isinstance(real, list)
            and len(shown) == len(real)
            and all(matches(s, r, seen) for s, r in zip(shown, real, strict=True))
        )
    return shown == real


def expected(step: Step) -> tuple[int | None, dict[str, str], Any]:
    """The status (None: any success), headers and body the README shows for a step."""
    lines = step.answer.split("\n")
    status, headers = None, {}
    if lines[0].startswith("HTTP/"):
        status = int(lines[0].split()[1])
        end = 1
        while ":" in lines[end] and not lines[end].startswith("{"):
            name, value = lines[end].split(":", 1)
            headers[name.strip().lower()] = value.strip()
            end += 1
        lines = [line for line in lines[end:] if line.strip() != ELIDED]
    body = documented("\n".join(lines))
    if status is None and isinstance(body, dict) and isinstance(body.get("status"), int):
        status = body["status"]  # a problem+json answer
    return status, headers, body


def run(command: str, env: dict[str, str]) -> Answer:
    """A curl command of the README's through the shell, and what it answered."""
    done = subprocess.run(
        ["bash", "-c", f"{command} --write-out '{STATUS_OUT}'"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, (command, done.stderr)
    output, status = done.stdout.rsplit("\n", 1)
    headers: dict[str, str] = {}
    if output.startswith("HTTP/"):
        head, output = re.split(r"\r?\n\r?\n", output, maxsplit=1)
        for line in head.splitlines()[1:]:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return Answer(int(status), headers, json.loads(output))


def answer_as_shown(step: Step, command: str, env: dict[str, str]) -> tuple[Answer, dict]:
    """The answer to a step once it is the README's (a read is repeated until it is), and the
    real values of those the README elides."""
    status, headers, body = expected(step)
    reads = " -X " not in step.command
    last: list[Answer] = []

    def answered() -> tuple[Answer, dict] | None:
        answer = run(command, env)
        last[:] = [answer]
        found: dict[str, str] = {}
        right = answer.status == status if status is not None else 200 <= answer.status < 300
        if right and matches(body, answer.body, found):
            return answer, found
        assert reads, f"{step.command}\nanswered {answer}"
        return None

    try:
        answer, found = wait_until(answered, timeout=60, what=step.command)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nnot the README's answer: {last}") from None
    for name, value in headers.items():
        assert answer.headers.get(name) == value, (step.command, name, answer.headers)
    return answer, found


def test_the_readme_walkthrough_answers_as_the_readme_shows(stack: Stack) -> None:
    steps = walkthrough()
    assert len(steps) >= 6, "the walkthrough was not found"
    host = urllib.parse.urlsplit(stack.url).netloc
    env = {"PATH": os.environ["PATH"]}
    seen: dict[str, str] = {}  # elided values as shown -> as answered

    def real(text: str) -> str:
        for shown in sorted(seen, key=len, reverse=True):
            text = text.replace(shown, seen[shown])
        assert ELIDED not in text, f"{text!r} names a value no earlier answer showed"
        return text

    for step in steps:
        assignment = re.fullmatch(r"(\w+)=(\S+)(\s+#.*)?", step.command)
        if assignment:
            env[assignment[1]] = real(assignment[2])
            continue
        assert step.command.startswith("curl "), step.command
        _, found = answer_as_shown(step, real(step.command).replace(README_HOST, host), env)
        seen.update(found)
