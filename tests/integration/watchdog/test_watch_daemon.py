"""``pai-watchdog`` as a process with its watch cache (the default) against the API stand-in: it lists once, then
follows the cluster through watch streams, survives dropped and expired watches, and stops cleanly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_apiserver import ClusterState, KubeApiStandIn, build_pod
from tests.integration.watchdog.test_daemon import scrape, serving, wait_for

pytestmark = pytest.mark.integration

NODE_READY = 'pai_node_count{disk_pressure="false",host_ip="10.0.0.1",memory_pressure="false",network_unavailable="false",node_name="node1",pid_pressure="false",ready="{ready}",unschedulable="false"}'  # noqa: E501


def lists(cluster: ClusterState) -> int:
    return sum(1 for path, query in cluster.requests() if path.startswith("/api/v1/") and "watch=true" not in query)


@pytest.fixture
def running(apiserver: KubeApiStandIn, cluster: ClusterState, token_file: Path) -> Iterator[str]:
    with serving(apiserver, cluster, token_file) as url:  # an open watch must not hold up the shutdown
        yield url


def test_follows_changes_through_watches_without_listing_again(
    running: str, cluster: ClusterState, apiserver: KubeApiStandIn
) -> None:
    wait_for("the first collection", lambda: scrape(running).count("pai_job_pod_count{") == 5)
    listed = lists(cluster)
    assert listed == 4  # 3 pages of pods, 1 of nodes

    cluster.patch_node("node1", {"ready": False})
    wait_for("NotReady by watch", lambda: NODE_READY.replace("{ready}", "false") in scrape(running))

    apiserver.drop_watches()  # as a load balancer or an API server restart cuts them
    cluster.upsert("pods", build_pod({"name": "job-9", "labels": {"jobName": "j"}, "node": "node1"}))
    wait_for("the new pod after reconnecting", lambda: scrape(running).count("pai_job_pod_count{") == 6)

    cluster.compact()
    apiserver.drop_watches()  # resumed from a version the server no longer has: 410, one more full list
    cluster.delete("pods", "default/job-0")
    wait_for("the deletion after the relist", lambda: scrape(running).count("pai_job_pod_count{") == 5)
    assert 'k8s_api_server_count{error="ok"' in scrape(running)
    assert lists(cluster) == listed + 4  # exactly one more full list, for the 410
