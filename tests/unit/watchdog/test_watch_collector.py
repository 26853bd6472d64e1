"""The collector with its watch cache (the default): the same series as listing, changes without lists, and the
API server's failures reported as a listing collector reports them."""

from __future__ import annotations

from pathlib import Path

import pytest

from kube_apiserver import ClusterState, Fault, KubeApiStandIn, build_pod
from pai_monitoring.watchdog.collector import KubernetesCollector
from tests.unit.watchdog.conftest import TOKEN, MakeCollector
from tests.unit.watchdog.helpers import Scrape
from tests.unit.watchdog.test_exposition import GOLDEN, SCENARIO, render
from tests.unit.watchdog.test_informer import wait_for


def watching(make_collector: MakeCollector, **options: object) -> KubernetesCollector:
    collector = make_collector(watch=True, **options)
    assert collector.cache is not None
    return collector


def caught_up(collector: KubernetesCollector, cluster: ClusterState) -> bool:
    """Both informers have seen the stand-in's latest version (the last change is a node change in these tests)."""
    assert collector.cache is not None
    return collector.cache.nodes.state().resource_version == str(cluster.resource_version)


def lists(cluster: ClusterState) -> int:
    return sum(1 for path, query in cluster.requests() if path.startswith("/api/v1/") and "watch=true" not in query)


def test_same_exposition_as_listing(
    cluster: ClusterState, apiserver: KubeApiStandIn, make_collector: MakeCollector
) -> None:
    cluster.load_scenario(SCENARIO)
    text = render(watching(make_collector).collect(), apiserver.url)
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_changes_arrive_by_watch_without_listing_again(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.load_scenario(SCENARIO)
    collector = watching(make_collector)
    first = Scrape(collector.collect())
    assert first.one("pai_node_count", node_name="gpu-node-1").labels["ready"] == "true"
    assert first.value("k8s_node_gpu_available", host_ip="10.0.0.1") == 1  # 8 minus alice's 4 + 1, carol's 2

    cluster.clear_requests()
    cluster.delete("pods", "default/alice-train-worker-0")
    cluster.patch_node("gpu-node-1", {"ready": False})
    wait_for("the watch events", lambda: caught_up(collector, cluster))
    second = Scrape(collector.collect())
    assert second.one("pai_node_count", node_name="gpu-node-1").labels["ready"] == "false"
    assert second.value("k8s_node_gpu_available", host_ip="10.0.0.1") == 6
    assert second.find("pai_job_pod_count", name="alice-train-worker-0") == []
    assert second.api_error() == "ok"
    assert lists(cluster) == 0
    requests = [path for path, query in cluster.requests() if "watch=true" not in query]
    assert requests == ["/readyz"]  # the collection's only request


def test_a_job_container_failure_arrives_by_watch(cluster: ClusterState, make_collector: MakeCollector) -> None:
    """The job failure series (status, restarts, owner) follow a watched pod as they follow a listed one."""
    cluster.load_scenario(SCENARIO)
    collector = watching(make_collector)
    before = Scrape(collector.collect())
    assert before.value("pai_job_container_restarts_total", pod_name="carol-llm-worker-0", name="worker") == 3

    cluster.clear_requests()
    carol = {
        "name": "carol-llm-worker-0",
        "labels": {"jobName": "carol~llm", "userName": "carol"},
        "node": "gpu-node-1",
        "containers": [
            {"name": "worker", "gpus": 2, "restarts": 4, "state": "waiting", "reason": "CrashLoopBackOff",
             "last_reason": "OOMKilled", "last_exit_code": 137},
            {"name": "sidecar", "state": "terminated", "reason": "Error", "exit_code": 2},
        ],
    }  # fmt: skip
    assert cluster.upsert("pods", build_pod(carol)) == "MODIFIED"
    changed = cluster.resource_version
    assert collector.cache is not None
    pods = collector.cache.pods
    wait_for("the pod's watch event", lambda: int(pods.state().resource_version or 0) >= changed)
    after = Scrape(collector.collect())
    worker = after.one("pai_job_container_status", pod_name="carol-llm-worker-0", name="worker").labels
    assert (worker["state"], worker["reason"]) == ("waiting", "CrashLoopBackOff")
    assert (worker["job_name"], worker["username"]) == ("carol~llm", "carol")
    assert after.value("pai_job_container_restarts_total", pod_name="carol-llm-worker-0", name="worker") == 4
    last = after.one("pai_job_container_last_terminated_timestamp_seconds", pod_name="carol-llm-worker-0")
    assert (last.labels["reason"], last.labels["exit_code"]) == ("OOMKilled", "137")
    assert lists(cluster) == 0


def test_api_server_down_is_reported_served_as_last_known_state_and_recovered(
    cluster: ClusterState, make_collector: MakeCollector
) -> None:
    """While the API server is down the cache is not current: the last good series stay, marked by their age."""
    cluster.load_scenario(SCENARIO)
    collector = watching(make_collector, interval=30.0)
    now = [1000.0]
    collector.clock = lambda: now[0]
    collector.wall_clock = lambda: now[0]
    first = Scrape(collector.collect())
    assert len(first.find("pai_job_pod_count")) == 6
    assert first.one("pai_watchdog_objects_timestamp_seconds").value == 1000.0

    cluster.set_fault(Fault("down"))
    now[0] += 45
    down = Scrape(collector.collect())
    assert down.api_error() == "connection_refused"
    assert down.errors("healthz") == 1
    assert len(down.find("pai_job_pod_count")) == 6  # the last known state
    now[0] += 3600  # far past any expiry: a watchdog that cannot see does not resolve NodeNotReady
    stale = Scrape(collector.collect())
    assert len(stale.find("pai_job_pod_count")) == 6
    assert stale.one("pai_node_count", node_name="gpu-node-3").labels["ready"] == "false"
    assert len(stale.find("pai_job_container_status")) == 2  # carol's sidecar and dave's worker failed
    assert stale.one("pai_watchdog_objects_timestamp_seconds").value == 1000.0

    cluster.set_fault(Fault())
    now[0] += 30
    back = Scrape(collector.collect())  # the informers retry at once instead of finishing their back-off
    assert back.api_error() == "ok"
    assert len(back.find("pai_job_pod_count")) == 6
    assert back.one("pai_watchdog_objects_timestamp_seconds").value == now[0]


def test_failing_watch_is_reported_while_the_health_check_passes(
    cluster: ClusterState, apiserver: KubeApiStandIn, make_collector: MakeCollector
) -> None:
    cluster.load_scenario(SCENARIO)
    collector = watching(make_collector)
    assert Scrape(collector.collect()).api_error() == "ok"

    cluster.set_fault(Fault("error", code=403, paths=("/api/v1/pods",)))  # e.g. the watch verb taken away
    apiserver.drop_watches()
    assert collector.cache is not None
    wait_for(
        "the failing watch", lambda: collector.cache is not None and collector.cache.pods.state().failure is not None
    )
    failing = Scrape(collector.collect())
    assert failing.api_error() == "http_403"
    assert failing.errors("api") == 1
    assert failing.errors("healthz") == 0
    assert len(failing.find("pai_job_pod_count")) == 6  # the last known state

    cluster.set_fault(Fault())
    assert Scrape(collector.collect()).api_error() == "ok"


def test_first_list_past_the_deadline_is_a_timeout_and_goes_on(
    cluster: ClusterState, make_collector: MakeCollector
) -> None:
    cluster.load_scenario(SCENARIO)
    cluster.set_fault(Fault("slow", seconds=1.0, paths=("/api/v1/pods",)))
    collector = watching(make_collector, page_size=2, request_timeout=2.0, timeout=2.0)  # 3 pages, 1.8 s to read them
    early = Scrape(collector.collect())
    assert early.api_error() == "timeout"
    assert early.errors("api") == 1
    cluster.set_fault(Fault())
    assert collector.cache is not None
    assert collector.cache.pods.wait_synced(20)  # the list went on in the background
    assert Scrape(collector.collect()).api_error() == "ok"


def test_a_cluster_larger_than_the_cache_is_reported(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.load_scenario(SCENARIO)
    result = Scrape(watching(make_collector, cache_max_objects=5).collect())
    assert result.api_error() == "too_many_objects"
    assert result.find("pai_job_pod_count") == []


def test_close_stops_the_informers(cluster: ClusterState, make_collector: MakeCollector, token_file: Path) -> None:
    cluster.load_scenario({**SCENARIO, "token": TOKEN})
    collector = watching(make_collector)
    collector.collect()
    assert collector.cache is not None
    threads = [collector.cache.pods._thread, collector.cache.nodes._thread]
    collector.close()
    assert all(thread is not None and not thread.is_alive() for thread in threads)


@pytest.mark.parametrize("watch", [True, False], ids=["watch", "list"])
def test_both_ways_count_an_unreadable_object_each_collection(
    cluster: ClusterState, make_collector: MakeCollector, watch: bool
) -> None:
    cluster.load_scenario(SCENARIO)
    cluster.upsert("pods", {"kind": "Pod", "metadata": {"name": "odd", "namespace": "x"}, "status": "not a mapping"})
    collector = make_collector(watch=watch)
    assert Scrape(collector.collect()).errors("parse") == 1
    assert Scrape(collector.collect()).errors("parse") == 2
