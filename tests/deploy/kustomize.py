"""What `kubectl kustomize` does with deploy/kubernetes, for the tests where kubectl is absent.

Only the part of kustomize the overlays use: `resources` (files, and folders holding a
kustomization), `namespace`, `images` (newName, newTag) and `patches` given by `path` (strategic
merge patches naming their target by kind and name). Anything else in a kustomization is
refused, so an overlay cannot start using a feature these tests would silently ignore (a
secretGenerator, say); test_kubernetes_manifests.py compares the result with kubectl's own where
kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
# Kinds that live outside any namespace (of those the manifests use).
CLUSTER_SCOPED = {"Namespace"}
# The patchMergeKey of the list fields the patches touch (the Kubernetes API's
# x-kubernetes-patch-merge-key); any other list is replaced whole, as kustomize does.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "topologySpreadConstraints": "topologyKey",
}

Document = dict[str, Any]


def _documents(path: Path) -> list[Document]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for d in yaml.load_all(path.read_text(), Loader=loader) if d]


def merge(base: Any, patch: Any, field: str = "") -> Any:
    """``patch`` merged into ``base`` as a strategic merge patch (without directives)."""
    if isinstance(patch, dict) and isinstance(base, dict):
        merged = dict(base)
        for key, value in patch.items():
            if isinstance(key, str) and key.startswith("$"):
                raise ValueError(f"patch directive {key} is not supported here")
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(patch, list) and isinstance(base, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            at = [i for i, old in enumerate(merged_list) if old.get(key) == item.get(key)]
            if at:
                merged_list[at[0]] = merge(merged_list[at[0]], item, field)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _pod_specs(document: Document) -> list[Document]:
    spec = document.get("spec", {})
    if document["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template")
    return [template["spec"]] if template else []


def _set_images(document: Document, images: list[Document]) -> None:
    for pod in _pod_specs(document):
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            name, _, tag = container["image"].partition(":")
            for image in images:
                if image["name"] == name:
                    new_name = image.get("newName", name)
                    new_tag = image.get("newTag", tag)
                    container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def render(folder: Path) -> list[Document]:
    """The documents `kubectl kustomize folder` prints (in the kustomization's order)."""
    (kustomization,) = _documents(folder / "kustomization.yaml")
    unknown = set(kustomization) - KNOWN
    if unknown:
        raise ValueError(f"{folder}: kustomization fields not rendered here: {sorted(unknown)}")
    documents: list[Document] = []
    for resource in kustomization.get("resources", []):
        path = (folder / resource).resolve()
        documents.extend(render(path) if path.is_dir() else _documents(path))
    for entry in kustomization.get("patches", []):
        if set(entry) != {"path"}:
            raise ValueError(f"{folder}: only patches by path are rendered here: {entry}")
        for patch in _documents(folder / entry["path"]):
            matches = [
                i
                for i, d in enumerate(documents)
                if (d["kind"], d["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"])
            ]
            if len(matches) != 1:
                raise ValueError(f"{entry['path']}: {len(matches)} targets")
            documents[matches[0]] = merge(documents[matches[0]], patch)
    if "namespace" in kustomization:
        for document in documents:
            if document["kind"] not in CLUSTER_SCOPED:
                document["metadata"]["namespace"] = kustomization["namespace"]
    for document in documents:
        _set_images(document, kustomization.get("images", []))
    return documents
