"""The API stand-in itself: the official client must read what it serves as it reads a real API server."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kube_apiserver import ClusterState, Fault, KubeApiStandIn, SyntheticCluster
from kube_apiserver.control import ControlServer, ScenarioWatcher
from tests.unit.watchdog.conftest import REPO, TOKEN


@pytest.fixture
def core(apiserver: KubeApiStandIn) -> Iterator[client.CoreV1Api]:
    configuration = client.Configuration()
    configuration.host = apiserver.url
    configuration.api_key = {"authorization": TOKEN}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(configuration) as api_client:
        yield client.CoreV1Api(api_client)


def status_of(exc: ApiException) -> dict[str, object]:
    body = json.loads(exc.body or "{}")
    assert isinstance(body, dict)
    return body


def test_client_models_read_lists_page_by_page(cluster: ClusterState, core: client.CoreV1Api) -> None:
    cluster.load_scenario(
        {
            "token": TOKEN,
            "nodes": [{"name": "n1", "ip": "10.0.0.1", "gpus": 2}],
            "pods": [{"name": f"p{i}", "labels": {"jobName": "j"}, "node": "n1"} for i in range(5)],
        }
    )
    first: Any = core.list_pod_for_all_namespaces(limit=2)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"]
    assert first.metadata.var_continue
    second: Any = core.list_pod_for_all_namespaces(limit=2, _continue=first.metadata.var_continue)
    third: Any = core.list_pod_for_all_namespaces(limit=2, _continue=second.metadata.var_continue)
    assert [p.metadata.name for p in second.items + third.items] == ["p2", "p3", "p4"]
    assert not third.metadata.var_continue
    node: Any = core.list_node().items[0]
    assert node.status.allocatable["nvidia.com/gpu"] == "2"
    read: Any = core.read_node("n1")
    assert read.metadata.name == "n1"
    pod: Any = core.read_namespaced_pod("p3", "default")
    assert pod.spec.node_name == "n1"
    assert len(core.list_namespaced_pod("default").items) == 5
    assert core.list_namespaced_pod("kube-system").items == []


def test_synthetic_objects_are_valid_models(cluster: ClusterState, core: client.CoreV1Api) -> None:
    synthetic = SyntheticCluster(nodes=3, pods=600)
    cluster.set_synthetic(synthetic)
    pods: list[Any] = core.list_pod_for_all_namespaces(limit=600).items
    assert len(pods) == 600
    assert {synthetic.pod_kind(i) for i in range(600)} == {"service", "pending", "failed", "crashloop", "running"}
    assert pods[0].metadata.labels == {"app": "service-0"}
    assert pods[1].status.phase == "Pending"
    assert pods[1].spec.node_name is None
    assert pods[2].status.container_statuses[0].state.terminated.exit_code == 1
    assert pods[3].spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert len({p.metadata.name for p in pods}) == 600
    assert len(core.list_node().items) == 3


def test_errors_are_status_objects(cluster: ClusterState, core: client.CoreV1Api) -> None:
    cluster.set_fault(Fault("error", code=403))
    with pytest.raises(ApiException) as raised:
        core.list_node()
    assert raised.value.status == 403
    assert status_of(raised.value) == {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": "stand-in fault: HTTP 403",
        "reason": "Forbidden",
        "code": 403,
    }
    cluster.set_fault(Fault())
    with pytest.raises(ApiException) as missing:
        core.read_node("nope")
    assert (missing.value.status, status_of(missing.value)["reason"]) == (404, "NotFound")


def test_bearer_token_is_checked(cluster: ClusterState, apiserver: KubeApiStandIn) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"{apiserver.url}/api/v1/nodes", timeout=5)
    assert raised.value.code == 401
    assert json.loads(raised.value.read())["reason"] == "Unauthorized"
    raised.value.close()


def test_continue_tokens_expire_and_bad_ones_are_rejected(cluster: ClusterState) -> None:
    cluster.set_token(None)
    cluster.load_scenario({"pods": [{"name": f"p{i}"} for i in range(4)]})
    with KubeApiStandIn(cluster, continue_window=0) as server:
        with urllib.request.urlopen(f"{server.url}/api/v1/pods?limit=2", timeout=5) as response:
            token = json.loads(response.read())["metadata"]["continue"]
        cluster.set_objects(pods=[])  # the list changed: the old snapshot is gone
        for query, code, reason in ((f"continue={token}", 410, "Expired"), ("continue=garbage", 400, "BadRequest")):
            with pytest.raises(urllib.error.HTTPError) as raised:
                urllib.request.urlopen(f"{server.url}/api/v1/pods?limit=2&{query}", timeout=5)
            assert (raised.value.code, json.loads(raised.value.read())["reason"]) == (code, reason)
            raised.value.close()


def _put(url: str, body: object, method: str = "PUT") -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def test_control_endpoint_changes_faults_and_nodes(cluster: ClusterState, core: client.CoreV1Api) -> None:
    cluster.load_scenario({"token": TOKEN, "nodes": [{"name": "n1", "ip": "10.0.0.1"}]})
    control = ControlServer(("127.0.0.1", 0), cluster)
    thread = threading.Thread(target=control.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{control.server_address[1]}"
    try:
        assert _put(f"{base}/nodes/n1", {"ready": False, "unschedulable": True}, "PATCH") == 200
        node: Any = core.read_node("n1")
        assert {c.type: c.status for c in node.status.conditions}["Ready"] == "False"
        assert node.spec.unschedulable is True
        assert _put(f"{base}/fault", {"mode": "error", "code": 500}) == 200
        with pytest.raises(ApiException) as raised:
            core.list_node()
        assert raised.value.status == 500
        with urllib.request.urlopen(f"{base}/scenario", timeout=5) as response:
            assert json.loads(response.read())["fault"]["mode"] == "error"
    finally:
        control.shutdown()
        control.server_close()
        thread.join(5)


def test_scenario_file_is_reloaded_when_it_changes(
    cluster: ClusterState, core: client.CoreV1Api, tmp_path: Path
) -> None:
    path = tmp_path / "scenario.yml"
    path.write_text(yaml.safe_dump({"token": TOKEN, "nodes": [{"name": "n1"}]}), encoding="utf-8")
    watcher = ScenarioWatcher(path, cluster, period=0.05)
    watcher.load()
    watcher.start()
    try:
        nodes: list[Any] = core.list_node().items
        assert [n.metadata.name for n in nodes] == ["n1"]
        path.write_text(yaml.safe_dump({"token": TOKEN, "nodes": [{"name": "n1", "ready": False}]}), encoding="utf-8")
        # a changed mtime is what triggers the reload; make sure it differs even on coarse clocks
        stat = path.stat()
        os.utime(path, (stat.st_atime, stat.st_mtime + 5))
        deadline = time.monotonic() + 10
        ready = "True"
        while time.monotonic() < deadline and ready == "True":
            node: Any = core.list_node().items[0]
            ready = {c.type: c.status for c in node.status.conditions}["Ready"]
            time.sleep(0.05)
        assert ready == "False"
    finally:
        watcher.stop()


def test_demo_scenario_loads_and_serves(cluster: ClusterState, core: client.CoreV1Api) -> None:
    demo = REPO / "sim" / "kube_apiserver" / "scenarios" / "demo.yml"
    doc = yaml.safe_load(demo.read_text(encoding="utf-8"))
    doc["token"] = TOKEN
    cluster.load_scenario(doc)
    pods: list[Any] = core.list_pod_for_all_namespaces().items
    assert {p.metadata.name for p in pods} >= {"rest-server-6d5f", "bob-bert-worker-0"}
    assert len(core.list_node().items) == 4
