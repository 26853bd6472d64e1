"""API server faults: each one shows in k8s_api_server_count and process_error_log_total, and the watchdog recovers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kube_apiserver import ClusterState, Fault
from tests.unit.watchdog.conftest import TOKEN, MakeCollector
from tests.unit.watchdog.helpers import Scrape

SCENARIO = {
    "token": TOKEN,
    "nodes": [{"name": "node1", "ip": "10.0.0.1", "gpus": 4}],
    "pods": [{"name": f"job-{i}", "labels": {"jobName": "j"}, "node": "node1"} for i in range(5)],
}


@pytest.fixture(autouse=True)
def _scenario(cluster: ClusterState) -> None:
    cluster.load_scenario(SCENARIO)


@pytest.mark.parametrize(
    ("fault", "reason", "counter"),
    [
        (Fault("down"), "connection_refused", "healthz"),
        (Fault("reset"), "connection_error", "healthz"),
        (Fault("slow", seconds=30), "timeout", "healthz"),
        (Fault("error", code=403), "http_403", "healthz"),
        (Fault("error", code=500), "http_500", "healthz"),
        (Fault("error", code=503, paths=("/readyz",)), "http_503", "healthz"),
        (Fault("error", code=500, paths=("/api/v1/pods",)), "http_500", "api"),
        (Fault("error", code=403, paths=("/api/v1/nodes",)), "http_403", "api"),
        (Fault("malformed", paths=("/api/v1/pods",)), "malformed_response", "parse"),
        (Fault("slow", seconds=30, paths=("/api/v1/nodes",)), "timeout", "api"),
    ],
    ids=lambda v: (
        v.mode + (f"-{v.code}" if v.mode == "error" else "") + ("-" + "+".join(v.paths) if v.paths else "")
        if isinstance(v, Fault)
        else str(v)
    ),
)
def test_fault_is_reported_then_recovered(
    cluster: ClusterState, make_collector: MakeCollector, fault: Fault, reason: str, counter: str
) -> None:
    # Far below the slow faults' 30 s, far above what a healthy answer takes on a busy machine.
    collector = make_collector(request_timeout=2.0)
    assert Scrape(collector.collect()).api_error() == "ok"

    cluster.set_fault(fault)
    failing = Scrape(collector.collect())
    assert failing.api_error() == reason
    assert failing.one("k8s_api_server_count").labels["url"] == collector.api.host
    assert failing.one("k8s_api_server_count").labels["host_ip"] == "127.0.0.1"  # the host, not the URL
    assert failing.errors(counter) == 1
    assert sum(s.value for s in failing.find("process_error_log_total")) == 1

    cluster.set_fault(Fault())
    recovered = Scrape(collector.collect())
    assert recovered.api_error() == "ok"
    assert len(recovered.find("pai_job_pod_count")) == 5
    assert recovered.errors(counter) == 1  # a counter: the past failure stays counted


def test_wrong_token_is_401_and_a_rotated_token_is_picked_up(make_collector: MakeCollector, token_file: Path) -> None:
    token_file.write_text("stale-token", encoding="utf-8")
    collector = make_collector()
    assert Scrape(collector.collect()).api_error() == "http_401"
    token_file.write_text(TOKEN, encoding="utf-8")
    assert Scrape(collector.collect()).api_error() == "ok"


def test_missing_token_file_is_a_credentials_error(make_collector: MakeCollector, token_file: Path) -> None:
    collector = make_collector()
    token_file.unlink()
    result = Scrape(collector.collect())
    assert result.api_error() == "credentials_error"
    assert result.errors("api") == 1
    assert len(result.find("pai_job_pod_count")) == 0


def test_last_known_objects_are_served_marked_stale_while_the_api_fails(
    cluster: ClusterState, make_collector: MakeCollector
) -> None:
    """A watchdog that cannot see keeps the last nodes and pods it saw (their alerts stay) and says how old they are."""
    cluster.load_scenario({**SCENARIO, "nodes": [{"name": "node1", "ip": "10.0.0.1", "gpus": 4, "ready": False}]})
    collector = make_collector(interval=30.0)
    now = [1000.0]
    collector.wall_clock = lambda: now[0]
    first = Scrape(collector.collect())
    assert first.one("pai_watchdog_objects_timestamp_seconds").value == 1000.0
    assert first.one("pai_node_count").labels["ready"] == "false"

    cluster.set_fault(Fault("error", code=500))
    now[0] += 3600  # an hour of failures, far past any expiry
    stale = Scrape(collector.collect())
    assert stale.api_error() == "http_500"
    assert len(stale.find("pai_job_pod_count")) == 5
    assert stale.one("pai_node_count").labels["ready"] == "false"  # NodeNotReady keeps firing
    assert stale.one("pai_watchdog_objects_timestamp_seconds").value == 1000.0  # marked: an hour old

    cluster.set_fault(Fault())
    now[0] += 30
    fresh = Scrape(collector.collect())
    assert fresh.one("pai_watchdog_objects_timestamp_seconds").value == 4630.0
    assert len(fresh.find("pai_job_pod_count")) == 5


def test_nothing_is_invented_before_the_first_list(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.set_fault(Fault("error", code=500))
    result = Scrape(make_collector().collect())
    assert result.api_error() == "http_500"
    assert result.find("pai_node_count") == []
    assert result.find("pai_watchdog_objects_timestamp_seconds") == []
    assert result.names() >= {"k8s_api_server_count", "process_error_log", "k8s_api_healthz_resp_latency_seconds"}


def test_collection_deadline_bounds_a_slow_paginated_list(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.set_fault(Fault("slow", seconds=0.4, paths=("/api/v1/pods",)))
    result = Scrape(make_collector(page_size=1, request_timeout=1.0, timeout=1.0).collect())
    assert result.api_error() == "timeout"
    assert result.errors("api") == 1
    assert result.find("pai_job_pod_count") == []


def test_server_without_readyz_is_checked_on_healthz(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.set_readyz(False)
    collector = make_collector()
    assert Scrape(collector.collect()).api_error() == "ok"
    cluster.clear_requests()
    assert Scrape(collector.collect()).api_error() == "ok"
    paths = [path for path, _ in cluster.requests()]
    assert "/healthz" in paths
    assert "/readyz" not in paths


def test_one_log_line_per_failure(
    cluster: ClusterState, make_collector: MakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    collector = make_collector()
    cluster.set_fault(Fault("error", code=500))
    with caplog.at_level(logging.INFO, logger="pai_monitoring.watchdog"):
        collector.collect()
        collector.collect()
        cluster.set_fault(Fault())
        collector.collect()
    lines = [r.getMessage() for r in caplog.records]
    errors = [line for line in lines if line.startswith("api_error ")]
    assert len(errors) == 2
    assert "call=healthz error=http_500" in errors[0]
    assert "stand-in fault: HTTP 500" in errors[0]  # the Status message is in the log, not in the label
    assert any(line.startswith("api_recovered ") and "previous_error=http_500" in line for line in lines)


def test_pagination_uses_limit_and_continue(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.clear_requests()
    result = Scrape(make_collector(page_size=2).collect())
    assert len(result.find("pai_job_pod_count")) == 5
    pod_queries = [query for path, query in cluster.requests() if path == "/api/v1/pods"]
    assert len(pod_queries) == 3
    assert all("limit=2" in query for query in pod_queries)
    assert "continue=" not in pod_queries[0]
    assert all("continue=" in query for query in pod_queries[1:])
