"""deploy/kubernetes: valid against the Kubernetes API schemas, one Deployment and autoscaler
per process of the code, probes on the ops port, and secrets that production refuses."""

from __future__ import annotations

import base64
import copy
import functools
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kernel.config import ConfigurationError, Settings
from services.platform import GATEWAY, SERVICES

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
OPS_PORT = 9100
PROCESSES = {**SERVICES, "gateway": GATEWAY}


@functools.cache
def _load(name: str) -> tuple[dict[str, Any], ...]:
    # libyaml's loader when present: the pure-Python one is ten times slower here.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(d for d in yaml.load_all((MANIFESTS / name).read_text(), Loader=loader) if d)


def load(name: str) -> list[dict[str, Any]]:
    """A fresh copy, so a test that edits a document edits its own."""
    return copy.deepcopy(list(_load(name)))


def kustomization() -> dict[str, Any]:
    return load("kustomization.yaml")[0]


def documents() -> list[dict[str, Any]]:
    return [d for name in kustomization()["resources"] for d in load(name)]


def find(kind: str, name: str) -> dict[str, Any]:
    (document,) = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return document


def test_the_kustomization_lists_every_manifest_in_the_folder() -> None:
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization()["resources"]) == sorted(files)


# kustomization.yaml is read by kubectl -k, never sent to the API server.
@pytest.mark.parametrize("name", sorted(kustomization()["resources"]))
def test_every_manifest_is_valid_for_the_kubernetes_api(name: str) -> None:
    for document in load(name):
        # strict: an unknown or misspelt field is an error, as kubectl --validate=strict says.
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_validation_refuses_a_misspelt_field() -> None:
    deployment = find("Deployment", "ledgerdesk-tickets")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_every_process_has_a_deployment_probes_resources_and_an_autoscaler(name: str) -> None:
    deployment = find("Deployment", f"ledgerdesk-{name}")
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["kernel.runner", PROCESSES[name]]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["ops"] == OPS_PORT
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz" and readiness["port"] in ports
    assert container["resources"]["requests"].keys() >= {"cpu", "memory"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(OPS_PORT)
    sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"ledgerdesk-config", "ledgerdesk-secrets"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"

    autoscaler = find("HorizontalPodAutoscaler", f"ledgerdesk-{name}")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"ledgerdesk-{name}",
    }
    assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]


def test_the_gateway_service_reaches_the_api_port() -> None:
    service = find("Service", "ledgerdesk-gateway")
    (container,) = find("Deployment", "ledgerdesk-gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == Settings().gateway_port
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert (
        service["spec"]["selector"].items()
        <= find("Deployment", "ledgerdesk-gateway")["spec"]["template"]["metadata"][
            "labels"
        ].items()
    )


def test_the_prepare_job_runs_the_platform_preparation() -> None:
    job = find("Job", "ledgerdesk-prepare")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["services.platform", "prepare"]
    images = {
        c["image"]
        for d in documents()
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"ledgerdesk:0.1.0"}
    assert [i["name"] for i in kustomization()["images"]] == ["ledgerdesk"]


def cluster_environment(**secrets: str) -> dict[str, str]:
    config = find("ConfigMap", "ledgerdesk-config")["data"]
    secret = find("Secret", "ledgerdesk-secrets")["stringData"]
    return {**config, **secret, **secrets}


def test_the_placeholder_secrets_are_refused_by_the_production_config() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(cluster_environment())
    for name in ("MASTER_KEY", "API_KEY_SECRET", "OPERATOR_TOKEN", "AUDIT_SIGNING_KEY"):
        assert f"LEDGERDESK_{name}" in str(refused.value)

    settings = Settings.from_env(
        cluster_environment(
            LEDGERDESK_MASTER_KEY="k2026a:" + base64.b64encode(bytes(range(32))).decode(),
            LEDGERDESK_API_KEY_SECRET="real",
            LEDGERDESK_OPERATOR_TOKEN="real",
            LEDGERDESK_AUDIT_SIGNING_KEY=base64.b64encode(bytes(range(1, 33))).decode(),
        )
    )
    assert settings.environment == "production"
    assert settings.gateway_host == "0.0.0.0"


def test_the_delivery_limit_matches_the_broker_definitions() -> None:
    definitions = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    limits = {q["arguments"].get("x-delivery-limit") for q in definitions["queues"]} - {None}
    settings = Settings.from_env(cluster_environment(LEDGERDESK_ENV="development"))
    assert limits == {settings.delivery_limit}


def test_every_ledgerdesk_variable_of_the_cluster_is_one_the_code_reads() -> None:
    asked: set[str] = set()

    class Recording(dict):
        def get(self, key: Any, default: Any = None) -> Any:
            asked.add(key)
            return super().get(key, default)

    env = Recording(cluster_environment(LEDGERDESK_ENV="development"))
    Settings.from_env(env)
    given = {name for name in env if name.startswith("LEDGERDESK_")}
    assert given <= asked, f"not read by Settings: {sorted(given - asked)}"
