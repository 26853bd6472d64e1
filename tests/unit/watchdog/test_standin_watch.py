"""The stand-in's watch as a raw HTTP client sees it, and the control-port hooks that make its events."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from kube_apiserver import ClusterState, KubeApiStandIn, SyntheticCluster
from kube_apiserver.control import ControlServer
from tests.unit.watchdog.conftest import TOKEN


@pytest.fixture
def control(cluster: ClusterState, apiserver: KubeApiStandIn) -> Iterator[str]:
    server = ControlServer(("127.0.0.1", 0), cluster, apiserver)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def call(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def watch(apiserver: KubeApiStandIn, query: str) -> list[dict[str, Any]]:
    """Every event of a watch that the server ends after one second (``timeoutSeconds=1``)."""
    request = urllib.request.Request(
        f"{apiserver.url}/api/v1/pods?watch=true&timeoutSeconds=1&{query}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        return [json.loads(line) for line in response.read().splitlines()]


def test_control_hooks_become_watch_events(cluster: ClusterState, apiserver: KubeApiStandIn, control: str) -> None:
    cluster.load_scenario({"token": TOKEN, "nodes": [{"name": "n1"}], "pods": [{"name": "p0", "node": "n1"}]})
    start = cluster.resource_version  # 3: n1 at 2, p0 at 3
    assert call(f"{control}/pods/default/p1", "PUT", {"labels": {"jobName": "j"}, "node": "n1"}) == {"event": "ADDED"}
    assert call(f"{control}/pods/default/p1", "PUT", {"labels": {"jobName": "j"}}) == {"event": "MODIFIED"}
    assert call(f"{control}/pods/default/p0", "DELETE") == {"ok": True}
    assert call(f"{control}/nodes/n1", "PATCH", {"ready": False}) == {"ok": True}  # not a pod: not in this watch
    events = watch(apiserver, f"resourceVersion={start}")
    assert [
        (e["type"], e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"]) for e in events
    ] == [
        ("ADDED", "p1", "4"),
        ("MODIFIED", "p1", "5"),
        ("DELETED", "p0", "6"),
    ]
    assert events[1]["object"]["spec"].get("nodeName") is None

    fresh = watch(apiserver, "")  # no version: the current state as ADDED events
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in fresh] == [("ADDED", "p1")]

    assert call(f"{control}/compact", "POST", {}) == {"resource_version": 8}
    expired = watch(apiserver, f"resourceVersion={start}")
    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in expired] == [("ERROR", 410, "Expired")]
    traffic = call(f"{control}/requests")
    assert (traffic["watch_requests"], traffic["list_requests"]) == (3, 0)
    assert traffic["bytes_sent"] > 0


def test_bookmarks_and_synthetic_churn(cluster: ClusterState, control: str) -> None:
    cluster.set_synthetic(SyntheticCluster(nodes=2, pods=10))
    with KubeApiStandIn(cluster, bookmark_interval=0.2) as server:
        start = cluster.resource_version
        assert call(f"{control}/churn", "POST", {"pods": 4}) == {"changed": 4}
        events = watch(server, f"resourceVersion={start}&allowWatchBookmarks=true")
    changed = [e for e in events if e["type"] == "MODIFIED"]
    assert [e["object"]["metadata"]["name"] for e in changed] == [f"syn-pod-00000{i}" for i in range(4)]
    running_before = changed[3]["object"]  # pod 3 ran; churn makes it crash-loop (pods 0-2 keep their kind)
    assert running_before["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks
    assert bookmarks[-1]["object"]["metadata"]["resourceVersion"] == str(cluster.resource_version)
