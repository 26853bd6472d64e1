"""The watchdog's alerts through a real Prometheus: a slow collection, an API server that fails, a watchdog that stops.

``pai-watchdog`` runs as a process against the Kubernetes API stand-in; Debian's Prometheus scrapes it every second
and evaluates the shipped kubernetes rules, with ``for:`` shortened by the prometheus role's own override filter.
Every wait is a liveness bound on an event Prometheus reports, not a timed assertion.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest

from kube_apiserver import ClusterState, Fault, KubeApiStandIn
from tests.support.exporter import REPO, free_port
from tests.support.prometheus import Prometheus, running_prometheus, tuned_rule_file
from tests.unit.watchdog.conftest import TOKEN

pytestmark = pytest.mark.integration

LAUNCH = "import sys; from pai_monitoring.cli import watchdog_main; sys.exit(watchdog_main())"
WAIT_S = 90.0
NOT_READY = {"node_name": "node1", "ready": "false"}
SCENARIO = {
    "token": TOKEN,
    "nodes": [{"name": "node1", "ip": "10.0.0.1", "gpus": 4, "ready": False}, {"name": "node2", "ip": "10.0.0.2"}],
    "pods": [{"name": "job-0", "labels": {"jobName": "j", "userName": "alice"}, "node": "node2"}],
}


class Watchdog:
    """``pai-watchdog`` as a process; its log goes to a file (a pipe nobody reads would block it)."""

    def __init__(self, port: int, args: list[str]) -> None:
        self.port = port
        self.args = args
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO / "collectors")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, f"--web.listen-address=127.0.0.1:{self.port}", *self.args],
            cwd=REPO, env=env, stdout=self.log, stderr=self.log,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]


@pytest.fixture
def make_watchdog(
    apiserver: KubeApiStandIn, cluster: ClusterState, token_file: Path
) -> Iterator[Callable[..., Watchdog]]:
    cluster.load_scenario(SCENARIO)
    made: list[Watchdog] = []

    def make(interval: float, timeout: float, request_timeout: float, watch: bool = True) -> Watchdog:
        watchdog = Watchdog(
            free_port(),
            [
                f"--collector.kubernetes.api-url={apiserver.url}",
                f"--collector.kubernetes.token-file={token_file}",
                f"--collector.kubernetes.interval={interval:g}",
                f"--collector.kubernetes.timeout={timeout:g}",
                f"--collector.kubernetes.request-timeout={request_timeout:g}",
                f"--collector.kubernetes.watch={'true' if watch else 'false'}",
            ],
        )
        watchdog.start()
        made.append(watchdog)
        return watchdog

    yield make
    for watchdog in made:
        watchdog.stop()
        print(watchdog.output())  # shown by pytest when the test fails
        watchdog.log.close()


def rules(tmp_path: Path, overrides: dict[str, dict[str, object]]) -> list[Path]:
    return [tuned_rule_file(tmp_path, "alerts/kubernetes.rules.yml", overrides)]


def wait(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    pytest.fail(f"gave up after {timeout:g}s waiting for {what}")


def value(prom: Prometheus, expr: str) -> float:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else float("nan")


def firing_through(prom: Prometheus, name: str, labels: dict[str, str], until: Callable[[], bool]) -> int:
    """Poll until ``until()``; fail on any poll where the alert is not firing. Returns the number of polls."""
    polls = 0
    deadline = time.monotonic() + WAIT_S
    while not until():
        assert prom.matching_alerts(name, "firing", labels), f"{name} stopped firing; active: {prom.alerts()}"
        polls += 1
        assert time.monotonic() < deadline, "the gap did not last long enough within the wait"
        time.sleep(0.25)
    return polls


@pytest.mark.parametrize(
    ("watch", "slow_path"),
    [(True, "/readyz"), (False, "/api/v1/nodes")],
    ids=["watch-cache-slow-health-check", "listing-slow-node-list"],
)
def test_a_collection_of_one_and_a_half_intervals_keeps_its_series_and_fires(
    make_watchdog: Callable[..., Watchdog], cluster: ClusterState, tmp_path: Path, watch: bool, slow_path: str
) -> None:
    # Each collection takes 3 s against a 2 s interval (1.5 intervals): with the watch cache (the default) the
    # health check is the request every collection makes, so it is the slow one; listing, the list of nodes.
    cluster.set_fault(Fault("slow", seconds=3.0, paths=(slow_path,)))
    watchdog = make_watchdog(interval=2.0, timeout=5.0, request_timeout=4.0, watch=watch)
    target = f"127.0.0.1:{watchdog.port}"
    with running_prometheus({"pai_watchdog": [target]}, rules(tmp_path, {"NodeNotReady": {"for": "10s"}})) as prom:
        alert = prom.wait_for_alert("NodeNotReady", labels=NOT_READY, timeout=WAIT_S)
        assert value(prom, 'max_over_time(pai_scrape_collector_duration_seconds{collector="kubernetes"}[1m])') >= 3.0

        # From the moment the alert went pending, every successful scrape carried the node's series.
        started = value(prom, 'ALERTS_FOR_STATE{alertname="NodeNotReady",node_name="node1"}')
        wait("a further collection after the alert fired", lambda: value(prom, "vector(time())") - started > 16)
        window = f"[{int(value(prom, 'vector(time())') - started) - 1}s]"
        scrapes = value(prom, f'sum_over_time(up{{job="pai_watchdog"}}{window})')
        samples = value(prom, f'count_over_time(pai_node_count{{node_name="node1"}}{window})')
        assert scrapes >= 12
        assert samples == scrapes
        assert alert["labels"]["host_ip"] == "10.0.0.1"


def test_an_api_server_that_fails_does_not_resolve_node_not_ready(
    make_watchdog: Callable[..., Watchdog], cluster: ClusterState, tmp_path: Path
) -> None:
    watchdog = make_watchdog(interval=1.0, timeout=2.0, request_timeout=1.0)
    target = f"127.0.0.1:{watchdog.port}"
    overrides: dict[str, dict[str, object]] = {"NodeNotReady": {"for": "3s"}, "k8sApiServerNotOk": {"for": "15s"}}
    with running_prometheus({"pai_watchdog": [target]}, rules(tmp_path, overrides)) as prom:
        prom.wait_for_alert("NodeNotReady", labels=NOT_READY)

        cluster.set_fault(Fault("error", code=500))
        prom.wait_for_series('k8s_api_server_count{error="http_500"}')
        pending = prom.wait_for_alert("k8sApiServerNotOk", state="pending")
        assert pending["labels"]["host_ip"] == "127.0.0.1"  # the host, not the URL
        failed_before = value(prom, 'process_error_log_total{type="healthz"}')
        # Far past the runtime's expiry (2 x (interval + timeout) = 6 s): ten failed collections.
        firing_through(
            prom,
            "NodeNotReady",
            NOT_READY,
            lambda: value(prom, 'process_error_log_total{type="healthz"}') >= failed_before + 10,
        )
        assert value(prom, "time() - pai_watchdog_objects_timestamp_seconds") > 6  # marked: the last known state

        # The reason changes (the port closes): still the same alert, its for: is not restarted.
        cluster.set_fault(Fault("down"))
        prom.wait_for_series('k8s_api_server_count{error="connection_refused"}')
        firing = prom.wait_for_alert("k8sApiServerNotOk", state="firing")
        assert firing["activeAt"] == pending["activeAt"]
        assert "connection_refused" in firing["annotations"]["description"]


def test_node_not_ready_holds_while_the_watchdog_is_down(
    make_watchdog: Callable[..., Watchdog], tmp_path: Path
) -> None:
    watchdog = make_watchdog(interval=1.0, timeout=2.0, request_timeout=1.0)
    target = f"127.0.0.1:{watchdog.port}"
    with running_prometheus({"pai_watchdog": [target]}, rules(tmp_path, {"NodeNotReady": {"for": "3s"}})) as prom:
        prom.wait_for_alert("NodeNotReady", labels=NOT_READY)
        watchdog.stop()
        prom.wait_for_series('up{job="pai_watchdog"} == 0')
        assert prom.query('pai_node_count{node_name="node1"}') == []  # the series are gone: a real gap
        down_since = value(prom, "vector(time())")
        firing_through(prom, "NodeNotReady", NOT_READY, lambda: value(prom, "vector(time())") - down_since > 10)

        watchdog.start()  # back, and the node still not ready: the same alert goes on
        prom.wait_for_series('up{job="pai_watchdog"} == 1')
        prom.wait_for_series('pai_node_count{node_name="node1"}')
        assert prom.matching_alerts("NodeNotReady", "firing", NOT_READY)


def test_failures_of_a_users_job_page_with_the_job_and_its_owner(
    make_watchdog: Callable[..., Watchdog], cluster: ClusterState, tmp_path: Path
) -> None:
    """Healthy job containers have no series; a container that starts restarting (its counter appears with the
    first restart, as it does in a real cluster), one that fails and an evicted pod each page with the job and
    its owner."""

    def job_pod(name: str, **extra: object) -> dict[str, object]:
        return {"name": name, "labels": {"jobName": "alice~bert", "userName": "alice"}, "node": "node2", **extra}

    def cluster_with(restarts: int) -> dict[str, object]:
        oom_killed = {"last_reason": "OOMKilled", "last_exit_code": 137, "last_finished_at": datetime.now(UTC)}
        return {
            **SCENARIO,
            "pods": [
                job_pod("bert-0", containers=[{"name": "main", "restarts": restarts, **oom_killed}]),
                job_pod("bert-1", containers=[{"name": "main", "state": "terminated", "reason": "Error",
                                               "exit_code": 3}]),
                job_pod("bert-2", phase="Failed", reason="Evicted", containers=[{"name": "main", "state": "terminated",
                                                                                 "reason": "Error", "exit_code": 137}]),
            ],
        }  # fmt: skip

    healthy = {**SCENARIO, "pods": [job_pod("bert-0"), job_pod("bert-1"), job_pod("bert-2")]}
    cluster.load_scenario(healthy)
    watchdog = make_watchdog(interval=1.0, timeout=2.0, request_timeout=1.0)
    names = ("PaiJobContainerRestarting", "PaiJobContainerOOMKilled", "PaiJobContainerFailed", "PaiJobPodEvicted")
    overrides: dict[str, dict[str, object]] = {name: {"for": "2s"} for name in names}
    with running_prometheus({"pai_watchdog": [f"127.0.0.1:{watchdog.port}"]}, rules(tmp_path, overrides)) as prom:
        prom.wait_for_series('pai_job_pod_count{name="bert-2", phase="running"}')
        assert prom.query('{__name__=~"pai_job_container_.*"}') == []  # healthy: no series per container
        assert [a for a in prom.alerts() if a["labels"]["alertname"] in names] == []

        for restarts in (1, 2, 3):  # one restart at a time, each seen by Prometheus, as a crash loop goes
            cluster.load_scenario(cluster_with(restarts))
            prom.wait_for_series(f'pai_job_container_restarts_total{{pod_name="bert-0"}} == {restarts}')
        owner = {"job_name": "alice~bert", "username": "alice"}
        restarting = prom.wait_for_alert("PaiJobContainerRestarting", labels={**owner, "pod_name": "bert-0"})
        oom = prom.wait_for_alert("PaiJobContainerOOMKilled", labels={**owner, "pod_name": "bert-0"})
        failed = prom.wait_for_alert("PaiJobContainerFailed", labels={**owner, "pod_name": "bert-1"})
        evicted = prom.wait_for_alert("PaiJobPodEvicted", labels={**owner, "name": "bert-2"})
        assert failed["labels"]["exit_code"] == "3"
        assert "alice" in evicted["annotations"]["description"]
        assert restarting["labels"]["node_name"] == oom["labels"]["node_name"] == "node2"
