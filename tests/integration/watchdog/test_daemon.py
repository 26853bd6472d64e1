"""``pai-watchdog`` as a process against the API stand-in: bad flags, scrapes during a stuck collection, recovery."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kube_apiserver import ClusterState, Fault, KubeApiStandIn
from tests.support.exporter import REPO, free_port, get
from tests.unit.watchdog.conftest import TOKEN

pytestmark = pytest.mark.integration

WAIT = 30.0
LAUNCH = "import sys; from pai_monitoring.cli import watchdog_main; sys.exit(watchdog_main())"


def watchdog(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "collectors")}
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up after {WAIT:g}s waiting for {what}")


def test_missing_credentials_exit_2_naming_the_flag() -> None:
    process = watchdog(f"--web.listen-address=127.0.0.1:{free_port()}")
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "--collector.kubernetes.kubeconfig" in err
    assert "exactly one credential source" in err


@contextlib.contextmanager
def serving(apiserver: KubeApiStandIn, cluster: ClusterState, token_file: Path, *flags: str) -> Iterator[str]:
    """``pai-watchdog`` on a free port against a five-pod cluster; yields its /metrics URL, checks a clean exit."""
    cluster.load_scenario({
        "token": TOKEN,
        "nodes": [{"name": "node1", "ip": "10.0.0.1", "gpus": 4}],
        "pods": [{"name": f"job-{i}", "labels": {"jobName": "j"}, "node": "node1"} for i in range(5)],
    })  # fmt: skip
    port = free_port()
    process = watchdog(
        f"--web.listen-address=127.0.0.1:{port}",
        f"--collector.kubernetes.api-url={apiserver.url}",
        f"--collector.kubernetes.token-file={token_file}",
        "--collector.kubernetes.interval=1",
        "--collector.kubernetes.page-size=2",
        *flags,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        yield url
        assert process.poll() is None, "pai-watchdog died"
    finally:
        process.terminate()
        _out, err = process.communicate(timeout=30)
        print(err[-4000:])  # shown by pytest when the test fails
    assert process.returncode == 0
    assert "Traceback" not in err


@pytest.fixture
def running(apiserver: KubeApiStandIn, cluster: ClusterState, token_file: Path) -> Iterator[str]:
    with serving(
        apiserver,
        cluster,
        token_file,
        "--collector.kubernetes.request-timeout=30",
        "--collector.kubernetes.timeout=60",
        "--collector.kubernetes.watch=false",  # a collection that lists can be stuck in a list: the case tested here
    ) as url:
        yield url


def scrape(url: str) -> str:
    try:
        status, body = get(url, timeout=10)
    except OSError:
        return ""
    return body if status == 200 else ""


def test_scrape_answers_during_a_stuck_collection_and_recovers(running: str, cluster: ClusterState) -> None:
    wait_for("the first collection", lambda: 'k8s_api_server_count{error="ok"' in scrape(running))
    assert scrape(running).count("pai_job_pod_count{") == 5

    cluster.set_fault(Fault("slow", seconds=120, paths=("/api/v1/pods",)))
    cluster.clear_requests()
    wait_for("a list request held by the slow server", lambda: any(p == "/api/v1/pods" for p, _ in cluster.requests()))
    during = scrape(running)  # the collection is now inside a list call that will not answer for two minutes
    assert during.count("pai_job_pod_count{") == 5
    assert 'k8s_api_server_count{error="ok"' in during

    cluster.set_fault(Fault("down"))  # the held connection is cut and the port closed
    wait_for("the outage to show", lambda: 'error="connection_refused"' in scrape(running))
    assert 'process_error_log_total{type="healthz"}' in scrape(running)

    cluster.set_fault(Fault())
    wait_for("recovery", lambda: 'k8s_api_server_count{error="ok"' in scrape(running))
    assert scrape(running).count("pai_job_pod_count{") == 5
