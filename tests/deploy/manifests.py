"""The rendered Kubernetes overlays, shared by the tests of deploy/kubernetes."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from tests.deploy.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("development", "production")
SECRETS_EXAMPLE = KUBERNETES / "secrets.example.env"


@functools.cache
def _rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(KUBERNETES / "overlays" / overlay))


def rendered(overlay: str) -> list[dict[str, Any]]:
    """A fresh copy of what `kubectl kustomize` prints for the overlay."""
    return copy.deepcopy(list(_rendered(overlay)))


def find(overlay: str, kind: str, name: str) -> dict[str, Any]:
    (document,) = [
        d for d in rendered(overlay) if d["kind"] == kind and d["metadata"]["name"] == name
    ]
    return document


def of_kind(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in rendered(overlay) if d["kind"] == kind}


def pod_spec(document: dict[str, Any]) -> dict[str, Any]:
    spec = document["spec"]
    if document["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def pod_labels(document: dict[str, Any]) -> dict[str, str]:
    spec = document["spec"]
    if document["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["metadata"]["labels"]


def workloads(overlay: str) -> list[dict[str, Any]]:
    """Everything that runs pods."""
    return [d for d in rendered(overlay) if d["kind"] in ("Deployment", "Job", "CronJob")]


def env_file(path: Path) -> dict[str, str]:
    """`kubectl create secret generic --from-env-file`'s reading: KEY=VALUE lines, the value
    taken as written; blank lines and `#` comments skipped."""
    values = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        values[key.strip()] = value
    return values
