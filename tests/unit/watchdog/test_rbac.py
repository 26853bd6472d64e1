"""The shipped RBAC manifest grants what the watchdog needs to read, and nothing that writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.unit.watchdog.conftest import REPO

RBAC = REPO / "roles" / "watchdog" / "files" / "rbac.yml"
READ_VERBS = {"get", "list", "watch"}


def documents(path: Path) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return {d["kind"]: d for d in docs}


def test_manifest_holds_the_account_its_role_binding_and_token() -> None:
    docs = documents(RBAC)
    assert set(docs) == {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Secret"}
    account = docs["ServiceAccount"]["metadata"]
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "pai-watchdog",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    secret = docs["Secret"]
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == account["name"]


def test_cluster_role_reads_pods_nodes_and_health_only() -> None:
    role = documents(RBAC)["ClusterRole"]
    # the client's own model accepts it (field names and types are right)
    model: Any = client.ApiClient().deserialize(json.dumps(role), "V1ClusterRole", "application/json")
    assert model.metadata.name == "pai-watchdog"
    resources: set[str] = set()
    urls: set[str] = set()
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= READ_VERBS, f"rule grants more than reading: {rule}"
        assert "*" not in rule.get("resources", [])
        assert "*" not in rule.get("apiGroups", [])
        resources.update(rule.get("resources", []))
        urls.update(rule.get("nonResourceURLs", []))
    assert resources == {"pods", "nodes"}
    assert {"/healthz", "/readyz"} <= urls
