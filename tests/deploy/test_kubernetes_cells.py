"""deploy/kubernetes/cells: a cell per region (the production overlay in a namespace of its own,
taking its region only) and the router in front of them, wired to each other's Services."""

from __future__ import annotations

import urllib.parse
from typing import Any

import kubernetes_validate

from gateway import directory
from kernel.config import Settings
from tests.deploy.kustomize import render
from tests.deploy.manifests import KUBERNETES, find, pod_labels, pod_spec
from tests.deploy.test_kubernetes_backups import (
    DATA_PROMISE_DAYS,
    backup_env,
    claim_of,
    longest_gap_days,
)
from tests.deploy.test_kubernetes_manifests import CUSTOM, KUBERNETES_VERSION

CELLS = KUBERNETES / "cells"
REGIONS = ("uk", "in")


def documents() -> list[dict[str, Any]]:
    return render(CELLS)


def of(kind: str, name: str, namespace: str) -> dict[str, Any]:
    (found,) = [
        d
        for d in documents()
        if d["kind"] == kind
        and d["metadata"]["name"] == name
        and d["metadata"].get("namespace") == namespace
    ]
    return found


# The router's Secret's values, as random as production requires (never a real one).
ROUTER_SECRET = {
    "LEDGERDESK_DATABASE_URL": "postgresql://db/postgres",
    "LEDGERDESK_API_KEY_SECRET": "Zq3x9VbT1mKp7LwR2sYd8NcH4fJg6AeU0oPi",
}


def router_settings() -> Settings:
    data = of("ConfigMap", "ledgerdesk-router-config", "ledgerdesk-router")["data"]
    return Settings.from_env({**data, **ROUTER_SECRET}, "router")


def test_each_cell_runs_the_whole_platform_in_its_own_namespace_for_its_region_only() -> None:
    everything = documents()
    for region in REGIONS:
        namespace = f"ledgerdesk-{region}"
        mine = [d for d in everything if d["metadata"].get("namespace") == namespace]
        deployments = {d["metadata"]["name"] for d in mine if d["kind"] == "Deployment"}
        assert deployments == {
            f"ledgerdesk-{name}"
            for name in ("accounts", "tickets", "billing", "audit", "retention", "gateway")
        }
        config = of("ConfigMap", "ledgerdesk-config", namespace)["data"]
        assert config["LEDGERDESK_REGIONS"] == region
        assert config["LEDGERDESK_DATABASE_PREFIX"] == f"ledgerdesk_{region}"
        # Its connections and keys come from its own namespace's Secret, never another cell's.
        for deployment in (d for d in mine if d["kind"] == "Deployment"):
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                for variable in container.get("env", []):
                    ref = variable.get("valueFrom", {}).get("secretKeyRef")
                    assert ref is None or ref["name"] == "ledgerdesk-secrets", variable


def test_the_router_reaches_each_cells_gateway_and_mail_listener_by_its_service() -> None:
    settings = router_settings()
    assert list(settings.cells) == list(REGIONS) == list(settings.cells_mail_in)
    for region in REGIONS:
        namespace = f"ledgerdesk-{region}"
        for url, service in (
            (settings.cells[region], "ledgerdesk-gateway"),
            (settings.cells_mail_in[region], "ledgerdesk-mail-in"),
        ):
            parts = urllib.parse.urlsplit(url)
            assert parts.hostname == f"{service}.{namespace}.svc"
            ports = [p["port"] for p in of("Service", service, namespace)["spec"]["ports"]]
            assert parts.port in ports


def test_mail_reaches_a_cell_only_through_the_router_and_the_router_reaches_only_cells() -> None:
    for region in REGIONS:
        policy = of("NetworkPolicy", "ledgerdesk-tickets", f"ledgerdesk-{region}")
        mail = [
            rule
            for rule in policy["spec"]["ingress"]
            if {"protocol": "TCP", "port": 2525} in rule["ports"]
        ]
        assert mail == [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "ledgerdesk-router"}
                        },
                        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "router"}},
                    }
                ],
                "ports": [{"protocol": "TCP", "port": 2525}],
            }
        ]
    router = of("NetworkPolicy", "ledgerdesk-router", "ledgerdesk-router")
    (to_cells,) = [
        rule
        for rule in router["spec"]["egress"]
        if {"protocol": "TCP", "port": 8000} in rule["ports"]
    ]
    (selector,) = to_cells["to"]
    (expression,) = selector["namespaceSelector"]["matchExpressions"]
    assert expression["values"] == [f"ledgerdesk-{region}" for region in REGIONS]


def test_the_router_holds_no_key_of_any_cell() -> None:
    """Its directory's server and the API key secret the cells share (to recognise a moved
    tenant's keys by their keyed hash), from its own Secret: no master key, no token."""
    deployment = of("Deployment", "ledgerdesk-router", "ledgerdesk-router")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["gateway.router"]
    assert [v["name"] for v in container["env"]] == [
        "LEDGERDESK_DATABASE_URL",
        "LEDGERDESK_API_KEY_SECRET",
    ]
    for variable in container["env"]:
        assert variable["valueFrom"]["secretKeyRef"]["name"] == "ledgerdesk-router-secrets"


def test_the_directory_is_backed_up_daily_by_the_platform_s_own_script() -> None:
    job = of("CronJob", "ledgerdesk-backup-directory", "ledgerdesk-router")
    env = backup_env(job)
    assert env["BACKUP_DATABASE"] == router_settings().database_name(directory.NAME)
    assert longest_gap_days(job["spec"]["schedule"]) == 1
    assert int(env["BACKUP_KEEP_DAYS"]) + 2 <= DATA_PROMISE_DAYS
    (container,) = pod_spec(job)["containers"]
    (secret,) = [v["valueFrom"]["secretKeyRef"] for v in container["env"] if "valueFrom" in v]
    assert secret == {"name": "ledgerdesk-router-secrets", "key": "LEDGERDESK_DATABASE_URL"}
    # The script the platform's jobs run, the drill and tests/deploy/test_kubernetes_backups.py
    # run for real: a copy that drifted would be a backup no one has tried.
    script = of("ConfigMap", "ledgerdesk-backup", "ledgerdesk-router")["data"]
    assert script == find("production", "ConfigMap", "ledgerdesk-backup")["data"]
    assert of("PersistentVolumeClaim", claim_of(job), "ledgerdesk-router")


def test_every_manifest_of_the_cells_is_valid_for_the_kubernetes_api_and_holds_no_secret() -> None:
    everything = documents()
    assert [d for d in everything if d["kind"] == "Secret"] == []
    for document in everything:
        if document["kind"] not in CUSTOM:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_a_cells_api_is_reached_through_the_router_only_and_trusts_its_forwarded_client() -> None:
    """Every request reaches a cell from the router: unless the cell trusts the router's
    X-Forwarded-For, every client shares one rate-limit bucket (one client's bad keys would
    lock out every tenant) and the access log names the router. Trusted, the router must then be
    the only one that can reach the gateway."""
    router_only = {
        "from": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "ledgerdesk-router"}
                },
                "podSelector": {"matchLabels": {"app.kubernetes.io/component": "router"}},
            }
        ],
        "ports": [{"protocol": "TCP", "port": 8000}],
    }
    for region in REGIONS:
        namespace = f"ledgerdesk-{region}"
        config = of("ConfigMap", "ledgerdesk-config", namespace)["data"]
        settings = Settings.from_env({**config, **ROUTER_SECRET}, "router")
        assert settings.trusted_proxies, region
        policy = of("NetworkPolicy", "ledgerdesk-gateway", namespace)
        api = [
            rule
            for rule in policy["spec"]["ingress"]
            if {"protocol": "TCP", "port": 8000} in rule["ports"]
        ]
        assert api == [router_only], region


def test_each_cell_keeps_its_region_of_the_directory_true_every_period() -> None:
    """The router reaches no cell's PostgreSQL: each cell runs the reconciliation for its own
    region (gateway.directory_sync --cell), as often as the router's own pass would run, with
    its own accounts database and the directory's URL, the one pod of the cell holding it."""
    for region in REGIONS:
        namespace = f"ledgerdesk-{region}"
        job = of("CronJob", "ledgerdesk-directory-sync", namespace)
        assert job["spec"]["schedule"] == (f"*/{int(Settings().directory_sync_minutes)} * * * *")
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        spec = pod_spec(job)
        (container,) = spec["containers"]
        assert container["args"] == ["gateway.directory_sync", "--cell", region]
        gateway = of("Deployment", "ledgerdesk-gateway", namespace)
        assert container["image"] == pod_spec(gateway)["containers"][0]["image"]
        refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container["env"]}
        assert refs == {
            name: {"name": "ledgerdesk-secrets", "key": name}
            for name in ("LEDGERDESK_DATABASE_URL", "LEDGERDESK_DIRECTORY_DATABASE_URL")
        }
        # What the job's process reads: this cell's accounts database, the router's directory.
        config = of("ConfigMap", "ledgerdesk-config", namespace)["data"]
        directory_url = "postgresql://sync:pw@router-db:5432/ledgerdesk_router_directory"
        settings = Settings.from_env(
            {
                **config,
                "LEDGERDESK_DATABASE_URL": "postgresql://cell-db/postgres",
                "LEDGERDESK_DIRECTORY_DATABASE_URL": directory_url,
            },
            "directory-sync",
        )
        assert settings.database_name("accounts") == f"ledgerdesk_{region}_accounts"
        assert settings.directory_database_url == directory_url
        assert urllib.parse.urlsplit(directory_url).path.lstrip(
            "/"
        ) == router_settings().database_name(directory.NAME)
        # No other workload of the cell is given the directory's URL.
        for document in documents():
            if document["metadata"].get("namespace") != namespace:
                continue
            if document["metadata"]["name"] == "ledgerdesk-directory-sync":
                continue
            if document["kind"] in ("Deployment", "Job", "CronJob"):
                assert "LEDGERDESK_DIRECTORY_DATABASE_URL" not in str(pod_spec(document)), document[
                    "metadata"
                ]["name"]


def test_the_directory_sync_job_may_reach_postgresql_and_nothing_else() -> None:
    for region in REGIONS:
        namespace = f"ledgerdesk-{region}"
        labels = pod_labels(of("CronJob", "ledgerdesk-directory-sync", namespace))
        selecting = [
            d
            for d in documents()
            if d["kind"] == "NetworkPolicy"
            and d["metadata"]["namespace"] == namespace
            and d["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
        ]
        names = {d["metadata"]["name"] for d in selecting}
        assert names == {"ledgerdesk-default-deny", "ledgerdesk-directory-sync"}, names
        policy = of("NetworkPolicy", "ledgerdesk-directory-sync", namespace)
        assert policy["spec"]["ingress"] == []
        ports = [
            (port["protocol"], port["port"])
            for rule in policy["spec"]["egress"]
            for port in rule["ports"]
        ]
        assert sorted(ports) == [("TCP", 53), ("TCP", 5432), ("UDP", 53)]
