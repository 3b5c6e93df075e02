"""deploy/kubernetes: a base and two overlays, each rendered valid against the Kubernetes API
schemas, one Deployment per process of the code, probes on the ops port, secrets referenced and
never applied, and the production overlay's autoscaling, budgets and spread."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
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
from services import broker_definitions
from services.platform import GATEWAY, SERVICES
from tests.deploy.kustomize import render
from tests.deploy.manifests import (
    KUBERNETES,
    OVERLAYS,
    ROOT,
    SECRETS_EXAMPLE,
    env_file,
    find,
    of_kind,
    pod_spec,
    rendered,
    workloads,
)

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
# A region cell's key for the router's directory: its reconciliation CronJob's alone
# (deploy/kubernetes/cells, test_kubernetes_cells.py), never the platform's containers'.
CELLS_ONLY = {"LEDGERDESK_DIRECTORY_DATABASE_URL"}
CONNECTIONS -= CELLS_ONLY
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
# Kinds of custom resources (KEDA's): no schema package holds them, their fields are checked below.
CUSTOM = {"ScaledObject", "TriggerAuthentication"}


def kustomization(folder: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERNETES / folder / "kustomization.yaml").read_text())


# --------------------------------------------------------------------------- rendering


def test_the_base_lists_every_manifest_in_its_folder() -> None:
    files = {p.name for p in (KUBERNETES / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization("base")["resources"]) == sorted(files)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_tests_render_each_overlay_as_kubectl_does(overlay: str) -> None:
    printed = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    theirs = [d for d in yaml.safe_load_all(printed) if d]

    def by_name(documents: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(d["kind"], d["metadata"]["name"]): d for d in documents}

    assert by_name(rendered(overlay)) == by_name(theirs)


def test_the_renderer_refuses_what_it_does_not_render(tmp_path: Any) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "resources: []\nsecretGenerator:\n  - name: s\n    literals: [a=b]\n"
    )
    with pytest.raises(ValueError, match="secretGenerator"):
        render(tmp_path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_manifest_is_valid_for_the_kubernetes_api(overlay: str) -> None:
    documents = rendered(overlay)
    assert {d["kind"] for d in documents} >= {"Deployment", "NetworkPolicy", "CronJob"}
    for document in documents:
        if document["kind"] in CUSTOM:
            continue
        # strict: an unknown or misspelt field is an error, as kubectl --validate=strict says.
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_validation_refuses_a_misspelt_field() -> None:
    deployment = find("production", "Deployment", "ledgerdesk-tickets")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_an_apply_cannot_overwrite_a_secret(overlay: str) -> None:
    """`kubectl apply` writes only the objects it is given: no overlay renders a Secret (nor a
    generator that would make one), so an apply never creates, changes or empties one; the pods
    only reference Secrets created out of band."""
    documents = rendered(overlay)
    assert [d["metadata"]["name"] for d in documents if d["kind"] == "Secret"] == []
    assert not [d for d in documents if "stringData" in d or d["kind"] == "List"]
    text = json.dumps(documents)
    assert "secretKeyRef" in text and "secretTargetRef" in json.dumps(rendered("production"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_referenced_is_documented_for_its_out_of_band_creation(overlay: str) -> None:
    example = env_file(SECRETS_EXAMPLE)
    for workload in workloads(overlay):
        for container in pod_spec(workload)["containers"]:
            workload_name = workload["metadata"]["name"]
            for name, key in secret_keys(container).items():
                assert key == key_of(name, workload_name) and key in example, (workload_name, key)
    for authentication in of_kind(overlay, "TriggerAuthentication").values():
        for ref in authentication["spec"]["secretTargetRef"]:
            assert ref["name"] == "ledgerdesk-keda-rabbitmq"
            documented = (KUBERNETES / "overlays" / overlay / "autoscaling.yaml").read_text()
            assert f"create secret generic {ref['name']}" in documented
            assert f"--from-literal={ref['key']}=" in documented


def container_of(process: str, overlay: str = "production") -> dict[str, Any]:
    kind, name = (
        ("Job", "ledgerdesk-prepare")
        if process == "prepare"
        else (
            "Deployment",
            f"ledgerdesk-{process}",
        )
    )
    (container,) = find(overlay, kind, name)["spec"]["template"]["spec"]["containers"]
    return container


def key_of(variable: str, workload: str) -> str:
    """The Secret's key a variable comes from: its own name, but a process's broker URI, which
    comes from its process's own key (its own broker user, services.broker_definitions)."""
    process = workload.removeprefix("ledgerdesk-")
    if variable == "LEDGERDESK_AMQP_URI" and process in broker_definitions.PROCESSES:
        return f"LEDGERDESK_AMQP_URI_{process.upper()}"
    return variable


def secret_keys(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables taken from ledgerdesk-secrets, and the key each comes from."""
    keys = {}
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["name"] == "ledgerdesk-secrets", variable["name"]
            keys[variable["name"]] = ref["key"]
    return keys


def process_environment(process: str, overlay: str = "production", **overrides: str) -> dict:
    """What the process's container sees: the ConfigMap, its keys of the Secret (as created from
    secrets.example.env), its own values."""
    container = container_of(process, overlay)
    config = find(overlay, "ConfigMap", "ledgerdesk-config")["data"]
    secret = env_file(SECRETS_EXAMPLE)
    own = {v["name"]: v["value"] for v in container.get("env", []) if "value" in v}
    given = {name: secret[key] for name, key in secret_keys(container).items()}
    return {**config, **own, **given, **overrides}


def test_the_secret_holds_exactly_the_declared_secrets_and_connection_urls() -> None:
    """secrets.example.env's keys are what kernel/config.py declares secret, and the URLs with
    passwords the cluster's processes read; the ConfigMap holds none of them."""
    secrets = {variable.variable for _, variable in declared() if variable.secret}
    assert secrets == {f"LEDGERDESK_{name}" for name in SECRET_FIELDS}
    broker_users = {
        f"LEDGERDESK_AMQP_URI_{process.upper()}" for process in broker_definitions.PROCESSES
    }
    assert set(env_file(SECRETS_EXAMPLE)) == secrets | CONNECTIONS | CELLS_ONLY | broker_users
    for overlay in OVERLAYS:
        config = find(overlay, "ConfigMap", "ledgerdesk-config")["data"]
        assert not set(config) & (secrets | CONNECTIONS | CELLS_ONLY)
        variables = {variable.variable for _, variable in declared()}
        assert {name for name in config if name.startswith("LEDGERDESK_")} <= variables


@pytest.mark.parametrize("process", sorted(ALL))
def test_each_process_is_given_exactly_the_secrets_it_uses(process: str) -> None:
    container = container_of(process)
    assert "secretRef" not in str(container.get("envFrom")), "never the whole Secret"
    keys = secret_keys(container)
    assert all(key == key_of(name, f"ledgerdesk-{process}") for name, key in keys.items())
    expected = CONNECTIONS | {f"LEDGERDESK_{n}" for n in SERVICE_SECRETS[process]}
    assert set(keys) == expected


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
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(process_environment(process), service=process)
    # The placeholder connection URLs' passwords are refused with the process's own secrets.
    refused_names = [*(n for n in SECRET_FIELDS if n in own), "AMQP_URI", "DATABASE_URL"]
    assert str(refused.value) == "production refuses development secrets: set " + ", ".join(
        f"LEDGERDESK_{n}" for n in refused_names
    )

    real = {k: v for k, v in REAL.items() if k.removeprefix("LEDGERDESK_") in own}
    connections = {
        "LEDGERDESK_AMQP_URI": "amqp://ledgerdesk-x:Tz5mQ9wL4r@rabbitmq:5672/",
        "LEDGERDESK_DATABASE_URL": "postgresql://ledgerdesk:Hq3nV8xK2p@postgres:5432/postgres",
    }
    settings = Settings.from_env(
        process_environment(process, **real, **connections), service=process
    )
    assert settings.environment == "production"
    assert settings.gateway_host == "0.0.0.0"
    assert settings.log_level == "info"
    assert settings.held_secrets == own


@pytest.mark.parametrize("process", sorted(ALL))
def test_the_development_overlay_runs_on_the_placeholders_with_debug_logs(process: str) -> None:
    settings = Settings.from_env(process_environment(process, "development"), service=process)
    assert (settings.environment, settings.log_level) == ("development", "debug")


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


# --------------------------------------------------------------------------- processes


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_every_process_has_a_deployment_with_probes_on_the_ops_port(
    overlay: str, name: str
) -> None:
    deployment = find(overlay, "Deployment", f"ledgerdesk-{name}")
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["kernel.runner", PROCESSES[name]]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["ops"] == OPS_PORT
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    # The ops server's /readyz (kernel/observability.py) asks the broker on one kept connection;
    # the gateway's API /readyz would open one per probe and ask every service over RPC.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert container["resources"]["requests"].keys() >= {"cpu", "memory"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(OPS_PORT)
    assert container["envFrom"] == [{"configMapRef": {"name": "ledgerdesk-config"}}]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "replicas" not in deployment["spec"], "an apply must not reset the replica count"


def test_the_gateway_service_reaches_the_api_port() -> None:
    service = find("production", "Service", "ledgerdesk-gateway")
    deployment = find("production", "Deployment", "ledgerdesk-gateway")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == Settings().gateway_port
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_keeps_serving_until_it_has_left_the_endpoints(overlay: str) -> None:
    """preStop sleeps longer than a readiness period (requests routed to the pod before it left
    the Service's endpoints are served), and the grace period covers the sleep and then the
    drain every other process gets."""
    pod = find(overlay, "Deployment", "ledgerdesk-gateway")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    sleep = int(command[1])
    readiness = container["readinessProbe"]
    assert sleep > readiness["periodSeconds"] * readiness["failureThreshold"]
    drains = {
        pod_spec(find(overlay, "Deployment", f"ledgerdesk-{name}"))["terminationGracePeriodSeconds"]
        for name in SERVICES
    }
    assert pod["terminationGracePeriodSeconds"] >= sleep + max(drains)


def test_the_prepare_job_runs_the_platform_preparation() -> None:
    (container,) = pod_spec(find("production", "Job", "ledgerdesk-prepare"))["containers"]
    assert container["args"] == ["services.platform", "prepare"]
    images = {
        c["image"]
        for d in workloads("production")
        if d["kind"] in ("Deployment", "Job")
        for c in pod_spec(d)["containers"]
    }
    assert images == {"registry.example.com/ledgerdesk:0.1.0"}
    assert [i["name"] for i in kustomization("base")["images"]] == ["ledgerdesk"]


# --------------------------------------------------------------------------- production


def consumed_queues(service: str) -> set[str]:
    """The queues a service consumes: its subscriptions, and its RPC queue."""
    import importlib

    from nameko.rpc import RPC_QUEUE_TEMPLATE

    module = importlib.import_module(f"services.{service}.subscriptions")
    return {s.queue for s in module.SUBSCRIPTIONS} | {RPC_QUEUE_TEMPLATE.format(service)}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_production_scales_each_service_on_its_queues_lengths(name: str) -> None:
    scaled = of_kind("production", "ScaledObject")[f"ledgerdesk-{name}"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    # KEDA's ScaledObject fields (keda.sh/v1alpha1): a misspelt one would be ignored silently.
    assert set(spec) <= {
        "scaleTargetRef",
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "idleReplicaCount",
        "minReplicaCount",
        "maxReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    }
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"ledgerdesk-{name}",
    }
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert "idleReplicaCount" not in spec, "never to zero"
    # The HPA KEDA makes takes the behaviour as an autoscaling/v2 one: valid as that.
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert set(spec["advanced"]) <= {
        "horizontalPodAutoscalerConfig",
        "restoreToOriginalReplicaCount",
    }
    kubernetes_validate.validate(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "keda-hpa"},
            "spec": {
                "scaleTargetRef": spec["scaleTargetRef"],
                "maxReplicas": spec["maxReplicaCount"],
                "behavior": behavior,
            },
        },
        KUBERNETES_VERSION,
        strict=True,
    )
    authentications = of_kind("production", "TriggerAuthentication")
    queues = set()
    for trigger in spec["triggers"]:
        assert set(trigger) == {"type", "metadata", "authenticationRef"}
        assert trigger["type"] == "rabbitmq"
        metadata = trigger["metadata"]
        assert set(metadata) <= {"protocol", "mode", "value", "activationValue", "queueName"}
        assert metadata["mode"] == "QueueLength" and metadata["protocol"] in ("http", "amqp")
        assert isinstance(metadata["value"], str) and int(metadata["value"]) > 0
        assert trigger["authenticationRef"]["name"] in authentications
        queues.add(metadata["queueName"])
    assert queues == consumed_queues(name)
    # KEDA owns the replicas: a CPU autoscaler on the same Deployment would fight it.
    assert f"ledgerdesk-{name}" not in of_kind("production", "HorizontalPodAutoscaler")


def test_the_trigger_authentication_takes_the_host_from_a_secret() -> None:
    for authentication in of_kind("production", "TriggerAuthentication").values():
        assert authentication["apiVersion"] == "keda.sh/v1alpha1"
        assert set(authentication["spec"]) == {"secretTargetRef"}
        for ref in authentication["spec"]["secretTargetRef"]:
            assert set(ref) == {"parameter", "name", "key"} and ref["parameter"] == "host"


def test_production_scales_the_gateway_on_cpu() -> None:
    autoscaler = find("production", "HorizontalPodAutoscaler", "ledgerdesk-gateway")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "ledgerdesk-gateway"
    assert [m["resource"]["name"] for m in autoscaler["spec"]["metrics"]] == ["cpu"]
    assert "ledgerdesk-gateway" not in of_kind("production", "ScaledObject")
    autoscaled = set(of_kind("production", "ScaledObject")) | set(
        of_kind("production", "HorizontalPodAutoscaler")
    )
    assert autoscaled == set(of_kind("production", "Deployment"))


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_production_budgets_spreads_and_sizes_each_process(name: str) -> None:
    deployment = find("production", "Deployment", f"ledgerdesk-{name}")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = find("production", "PodDisruptionBudget", f"ledgerdesk-{name}")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    scaled = of_kind("production", "ScaledObject").get(f"ledgerdesk-{name}")
    minimum = (
        scaled["spec"]["minReplicaCount"]
        if scaled
        else find("production", "HorizontalPodAutoscaler", f"ledgerdesk-{name}")["spec"][
            "minReplicas"
        ]
    )
    assert budget["spec"]["minAvailable"] < minimum, "a drain can always evict one"

    spread = {c["topologyKey"]: c for c in pod_spec(deployment)["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in spread.values():
        assert constraint["labelSelector"]["matchLabels"] == {
            k: v for k, v in labels.items() if k != "app.kubernetes.io/part-of"
        }
        assert constraint["maxSkew"] == 1
    (container,) = pod_spec(deployment)["containers"]
    base = render(KUBERNETES / "base")
    (base_deployment,) = [
        d
        for d in base
        if (d["kind"], d["metadata"]["name"]) == ("Deployment", f"ledgerdesk-{name}")
    ]
    (base_container,) = pod_spec(base_deployment)["containers"]
    # The patch changed the resources and kept the rest of the container.
    assert container["resources"] != base_container["resources"]
    assert {k: v for k, v in container.items() if k != "resources"} == {
        k: v for k, v in base_container.items() if k != "resources"
    }


def test_development_has_no_autoscalers_budgets_or_spread() -> None:
    kinds = {d["kind"] for d in rendered("development")}
    assert not kinds & {"HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget"}
    for deployment in of_kind("development", "Deployment").values():
        assert "topologySpreadConstraints" not in pod_spec(deployment)


def test_the_commands_in_the_docs_apply_an_overlay_that_renders() -> None:
    import re

    text = (ROOT / "docs" / "operations.md").read_text() + (
        ROOT / "deploy" / "README.md"
    ).read_text()
    targets = set(re.findall(r"kubectl apply -k ([^\s`]+)", text))
    assert targets, "the guide applies the overlays"
    for target in targets:
        # An overlay, or the cells (deploy/kubernetes/cells: a cell per region and the router).
        assert target.startswith(("deploy/kubernetes/overlays/", "deploy/kubernetes/cells")), target
        assert render(ROOT / target)
    # A prune would delete what the manifests do not hold: the Secrets created out of band.
    assert not re.findall(r"kubectl apply[^\n`]*--prune", text)
