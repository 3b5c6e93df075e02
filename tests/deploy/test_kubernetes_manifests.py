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

from kernel.config import (
    DEV_AUDIT_SIGNING_KEY,
    SECRET_FIELDS,
    SERVICE_SECRETS,
    ConfigurationError,
    Settings,
    declared,
)
from kernel.signing import signer_from_config
from services.platform import GATEWAY, SERVICES

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
OPS_PORT = 9100
PROCESSES = {**SERVICES, "gateway": GATEWAY}
# Every container of Ledgerdesk: the processes, and the prepare job.
ALL = [*PROCESSES, "prepare"]
# Every container takes these from ledgerdesk-secrets: the URLs that hold the broker's and the
# database's passwords (declared as credentials in kernel/config.py).
CONNECTIONS = {
    variable.variable
    for _, variable in declared()
    if variable.credential and not variable.tests_only
}
# Production values: long, random-looking, none a development value.
REAL = {
    "LEDGERDESK_MASTER_KEY": "k2026a:" + base64.b64encode(bytes(range(32))).decode(),
    "LEDGERDESK_API_KEY_SECRET": "Jq8vX2mR7tLw0pZ4nC6yH1kB9sD3fG5a",
    "LEDGERDESK_OPERATOR_TOKEN": "uE3rT7yW1qZ9xC5vB2nM8kL4jH6gF0dS",
    "LEDGERDESK_AUDIT_SIGNING_KEY": base64.b64encode(bytes(range(1, 33))).decode(),
    "LEDGERDESK_SMTP_PASSWORD": "Rk7wQ2pZ9xL4vN1cT6yB3mH8jD5sF0gA",
    "LEDGERDESK_ATTACHMENT_S3_ACCESS_KEY_ID": "AKIA7QX2M4PZ9LKV3TNB",
    "LEDGERDESK_ATTACHMENT_S3_SECRET_ACCESS_KEY": "v8Lq2Xz7Pm4Kt9Rw1Bn6Cy3Hd5Gf0Js2Ua8Ek4Oi",
}


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
    assert container["envFrom"] == [{"configMapRef": {"name": "ledgerdesk-config"}}]
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


def container_of(process: str) -> dict[str, Any]:
    kind, name = (
        ("Job", "ledgerdesk-prepare")
        if process == "prepare"
        else (
            "Deployment",
            f"ledgerdesk-{process}",
        )
    )
    (container,) = find(kind, name)["spec"]["template"]["spec"]["containers"]
    return container


def secret_keys(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables taken from ledgerdesk-secrets, and the key each comes from."""
    keys = {}
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["name"] == "ledgerdesk-secrets", variable["name"]
            keys[variable["name"]] = ref["key"]
    return keys


def process_environment(process: str, **overrides: str) -> dict[str, str]:
    """What the process's container sees: the ConfigMap, its keys of the Secret, its own values."""
    container = container_of(process)
    config = find("ConfigMap", "ledgerdesk-config")["data"]
    secret = find("Secret", "ledgerdesk-secrets")["stringData"]
    own = {v["name"]: v["value"] for v in container.get("env", []) if "value" in v}
    given = {name: secret[key] for name, key in secret_keys(container).items()}
    return {**config, **own, **given, **overrides}


def test_the_secret_holds_exactly_the_declared_secrets_and_connection_urls() -> None:
    """secret.yaml's keys are what kernel/config.py declares secret, and the URLs with passwords
    the cluster's processes read; the ConfigMap holds none of them."""
    secrets = {variable.variable for _, variable in declared() if variable.secret}
    assert secrets == {f"LEDGERDESK_{name}" for name in SECRET_FIELDS}
    assert set(find("Secret", "ledgerdesk-secrets")["stringData"]) == secrets | CONNECTIONS
    config = find("ConfigMap", "ledgerdesk-config")["data"]
    assert not set(config) & (secrets | CONNECTIONS)
    variables = {variable.variable for _, variable in declared()}
    assert {name for name in config if name.startswith("LEDGERDESK_")} <= variables


@pytest.mark.parametrize("process", sorted(ALL))
def test_each_process_is_given_exactly_the_secrets_it_uses(process: str) -> None:
    container = container_of(process)
    assert "secretRef" not in str(container.get("envFrom")), "never the whole Secret"
    keys = secret_keys(container)
    assert all(name == key for name, key in keys.items())
    expected = CONNECTIONS | {f"LEDGERDESK_{n}" for n in SERVICE_SECRETS[process]}
    assert set(keys) == expected
    # Every key a container names is in the Secret: a pod would not start otherwise.
    assert set(keys) <= set(find("Secret", "ledgerdesk-secrets")["stringData"])


def test_the_gateway_has_the_audit_public_key_and_never_the_seed() -> None:
    env = process_environment("gateway")
    assert "LEDGERDESK_AUDIT_SIGNING_KEY" not in env
    assert json.loads(env["LEDGERDESK_AUDIT_PUBLIC_KEYS"]) == [
        {
            "public_key": signer_from_config(DEV_AUDIT_SIGNING_KEY).public_key_b64,
            "valid_from": "1970-01-01T00:00:00+00:00",
            "valid_until": None,
        }
    ]


@pytest.mark.parametrize("process", sorted(ALL))
def test_the_placeholder_secrets_are_refused_by_the_production_config(process: str) -> None:
    own = SERVICE_SECRETS[process]
    if own:
        with pytest.raises(ConfigurationError) as refused:
            Settings.from_env(process_environment(process), service=process)
        assert str(refused.value) == "production refuses development secrets: set " + ", ".join(
            f"LEDGERDESK_{n}" for n in SECRET_FIELDS if n in own
        )

    real = {k: v for k, v in REAL.items() if k.removeprefix("LEDGERDESK_") in own}
    settings = Settings.from_env(process_environment(process, **real), service=process)
    assert settings.environment == "production"
    assert settings.gateway_host == "0.0.0.0"
    assert settings.held_secrets == own


def test_the_delivery_limit_matches_the_broker_definitions() -> None:
    definitions = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    limits = {q["arguments"].get("x-delivery-limit") for q in definitions["queues"]} - {None}
    for process in ALL:
        env = process_environment(process, LEDGERDESK_ENV="development")
        assert limits == {Settings.from_env(env, service=process).delivery_limit}


@pytest.mark.parametrize("process", sorted(ALL))
def test_every_ledgerdesk_variable_of_the_cluster_is_one_the_code_reads(process: str) -> None:
    asked: set[str] = set()

    class Recording(dict):
        def get(self, key: Any, default: Any = None) -> Any:
            asked.add(key)
            return super().get(key, default)

    # Read as the process reads it: a secret it was given but does not read is found too.
    env = Recording(process_environment(process, LEDGERDESK_ENV="development"))
    Settings.from_env(env, service=process)
    given = {name for name in env if name.startswith("LEDGERDESK_")}
    assert given <= asked, f"not read by Settings: {sorted(given - asked)}"
