"""deploy/kubernetes's NetworkPolicies, as the cluster would enforce them: everything denied,
then each workload allowed what it uses. Evaluated here by selecting pods and peers as the API
defines (matchLabels of pods and namespaces, ipBlocks, ports), per rendered overlay."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from kernel.platform import SENDS_MAIL
from services.platform import SERVICES
from tests.deploy.manifests import OVERLAYS, of_kind, pod_labels, pod_spec, workloads

NAMESPACE = "ledgerdesk"
# Peers a packet may come from or go to: (namespace labels, pod labels, address).
MONITORING = ({"kubernetes.io/metadata.name": "monitoring"}, {"app": "prometheus"}, "10.1.0.9")
OUTSIDE = (None, None, "203.0.113.7")  # a client on the internet, through the load balancer
DNS = ({"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"}, "10.1.0.10")
COLLECTOR = (
    {"kubernetes.io/metadata.name": "observability"},
    {"app": "otel-collector"},
    "10.1.0.11",
)
POSTGRES = ({"kubernetes.io/metadata.name": "data"}, {"app": "postgres"}, "10.1.0.12")
RABBITMQ = ({"kubernetes.io/metadata.name": "data"}, {"app": "rabbitmq"}, "10.1.0.13")
SMTP_RELAY = (None, None, "198.51.100.25")
# The relay that hands inbound mail over, in each overlay's RELAY CIDR (the base's placeholder
# is a documentation address no relay has; production's is the network its patch sets).
MAIL_RELAY = {
    "development": (None, None, "192.0.2.25"),
    "production": (None, None, "10.0.25.3"),
}
WEBHOOK = (None, None, "192.0.2.80")
METADATA = (None, None, "169.254.169.254")  # a cloud's metadata endpoint
OTHER_POD = ({"kubernetes.io/metadata.name": "ledgerdesk"}, {"app": "intruder"}, "10.1.0.99")


def matches(selector: dict[str, Any] | None, labels: dict[str, str] | None) -> bool:
    if selector is None:
        return True
    if labels is None:
        return False
    assert set(selector) <= {"matchLabels"}, "matchExpressions are not evaluated here"
    return selector.get("matchLabels", {}).items() <= labels.items()


def peer_matches(peer: dict[str, Any], who: tuple) -> bool:
    namespace, pod, address = who
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(address)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if "namespaceSelector" in peer:
        return matches(peer["namespaceSelector"], namespace) and matches(
            peer.get("podSelector"), pod
        )
    # A podSelector alone: pods of the policy's own namespace.
    return namespace == {"kubernetes.io/metadata.name": NAMESPACE} and matches(
        peer["podSelector"], pod
    )


def port_matches(rule: dict[str, Any], port: int, protocol: str) -> bool:
    if "ports" not in rule:
        return True
    return any(
        p.get("protocol", "TCP") == protocol and p.get("port", port) == port for p in rule["ports"]
    )


def allowed(
    overlay: str, workload: str, direction: str, who: tuple, port: int, protocol: str = "TCP"
) -> bool:
    """Whether the overlay's policies let ``who`` reach ``workload`` on ``port`` (ingress), or
    ``workload`` reach ``who`` (egress): some policy selecting the pod allows it."""
    labels = [pod_labels(w) for w in workloads(overlay) if w["metadata"]["name"] == workload][0]
    kind = "Ingress" if direction == "ingress" else "Egress"
    peers = "from" if direction == "ingress" else "to"
    for policy in of_kind(overlay, "NetworkPolicy").values():
        spec = policy["spec"]
        if kind not in spec["policyTypes"] or not matches(spec["podSelector"], labels):
            continue
        for rule in spec.get(direction, []):
            sources = rule.get(peers)
            if (sources is None or any(peer_matches(p, who) for p in sources)) and port_matches(
                rule, port, protocol
            ):
                return True
    return False


def every_workload(overlay: str) -> list[str]:
    return [w["metadata"]["name"] for w in workloads(overlay)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_denied_by_default_and_has_its_own_policy(overlay: str) -> None:
    policies = of_kind(overlay, "NetworkPolicy")
    default = policies["ledgerdesk-default-deny"]["spec"]
    assert default == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for workload in workloads(overlay):
        own = [
            name
            for name, policy in policies.items()
            if policy["spec"]["podSelector"] != {}
            and matches(policy["spec"]["podSelector"], pod_labels(workload))
        ]
        assert len(own) == 1, (workload["metadata"]["name"], own)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_from_outside(overlay: str) -> None:
    for name in every_workload(overlay):
        for port in (8000, 9100, 2525, 5432, 80):
            reachable = allowed(overlay, name, "ingress", OUTSIDE, port)
            expected = (name, port) == ("ledgerdesk-gateway", 8000)
            assert reachable == expected, (name, port)
            # Nor from another pod of the namespace: the services talk through RabbitMQ only.
            assert allowed(overlay, name, "ingress", OTHER_POD, port) == expected, (name, port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_mail_port_is_open_to_the_relay_only(overlay: str) -> None:
    relay = MAIL_RELAY[overlay]
    for name in every_workload(overlay):
        assert allowed(overlay, name, "ingress", relay, 2525) == (name == "ledgerdesk-tickets")
        assert not allowed(overlay, name, "ingress", relay, 9100)
    for who in (OUTSIDE, OTHER_POD, MONITORING, SMTP_RELAY):
        assert not allowed(overlay, "ledgerdesk-tickets", "ingress", who, 2525), who
    assert allowed(overlay, "ledgerdesk-tickets", "ingress", MONITORING, 9100)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ops_port_is_open_to_the_monitoring_namespace_only(overlay: str) -> None:
    for name in every_workload(overlay):
        long_running = name.removeprefix("ledgerdesk-") in {*SERVICES, "gateway"}
        assert allowed(overlay, name, "ingress", MONITORING, 9100) == long_running, name
        assert not allowed(overlay, name, "ingress", MONITORING, 5432)
    # And the port it opens is the one the containers serve their metrics on.
    for deployment in of_kind(overlay, "Deployment").values():
        (container,) = pod_spec(deployment)["containers"]
        assert {"name": "ops", "containerPort": 9100} in container["ports"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_workload_reaches_what_it_uses_and_nothing_else(overlay: str) -> None:
    services = {f"ledgerdesk-{name}" for name in SERVICES}
    for name in every_workload(overlay):
        is_process = name in services or name == "ledgerdesk-gateway"
        is_backup = name.startswith("ledgerdesk-backup-")
        assert allowed(overlay, name, "egress", DNS, 53, "UDP"), name
        assert allowed(overlay, name, "egress", POSTGRES, 5432), name
        assert allowed(overlay, name, "egress", RABBITMQ, 5672) == (not is_backup), name
        assert allowed(overlay, name, "egress", COLLECTOR, 4318) == is_process, name
        # Webhook URLs may name any port of a public address, so the gateway reaches those too.
        mailers = {f"ledgerdesk-{name}" for name in SENDS_MAIL} | {"ledgerdesk-gateway"}
        assert allowed(overlay, name, "egress", SMTP_RELAY, 587) == (name in mailers), name
        assert allowed(overlay, name, "egress", WEBHOOK, 443) == (name == "ledgerdesk-gateway")
        # Nothing reaches a cloud's metadata endpoint or the collector's other ports.
        assert not allowed(overlay, name, "egress", METADATA, 80), name
        assert not allowed(overlay, name, "egress", COLLECTOR, 4317), name
        assert not allowed(overlay, name, "egress", DNS, 443), name


def test_the_evaluation_tells_an_open_port_from_a_closed_one() -> None:
    # The peers above are told apart: a monitoring pod is not the outside, nor a pod elsewhere.
    policy = of_kind("production", "NetworkPolicy")["ledgerdesk-accounts"]["spec"]
    (rule,) = policy["ingress"]
    assert peer_matches(rule["from"][0], MONITORING)
    assert not peer_matches(rule["from"][0], OUTSIDE)
    assert not peer_matches(rule["from"][0], OTHER_POD)
    assert port_matches(rule, 9100, "TCP") and not port_matches(rule, 9100, "UDP")
