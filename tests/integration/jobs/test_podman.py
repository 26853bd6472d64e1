"""Real containers started with podman: identity from ``/proc``, labels through a Docker-compatible API socket, own
network namespace counters, and series that vanish when the container stops."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from tests.integration.jobs.conftest import PREFIX, container, host_collector, podman
from tests.unit.jobs.helpers import samples

pytestmark = pytest.mark.integration

PAI_ENV = (
    "-e", "PAI_JOB_NAME=it-job", "-e", "PAI_USER_NAME=it-user", "-e", "PAI_CURRENT_TASK_ROLE_NAME=trainer",
    "-e", "PAI_TASK_INDEX=2", "-e", "PAI_VIRTUAL_CLUSTER=it-vc", "-e", "FC_FRAMEWORK_ATTEMPT_INSTANCE_UID=it-uid-1",
)  # fmt: skip
EXPECTED = {
    "username": "it-user", "job_name": "it-job", "role_name": "trainer", "task_index": "2",
    "job_instance_id": "it-uid-1", "virtual_cluster": "it-vc",
}  # fmt: skip


def _series_of(families: list[Metric], name: str, job_name: str) -> list[dict[str, str]]:
    found = samples(families, name)
    return [dict(labels) for labels in found if ("job_name", job_name) in labels]


def test_a_podman_job_appears_with_its_labels_and_vanishes_when_stopped(busybox_image: str) -> None:
    name = f"{PREFIX}-env"
    collector = host_collector()
    with container(name, busybox_image, *PAI_ENV) as container_id:
        families = list(collector.collect())
        (usage,) = _series_of(families, "task_mem_usage_byte", "it-job")
        assert usage == EXPECTED
        (info,) = _series_of(families, "task_info", "it-job")
        assert (info["runtime"], info["container_id"]) == ("podman", container_id)
        # podman gives the container its own network namespace: counters are the job's own, per container
        per_container = {**EXPECTED, "container_id": container_id}
        assert _series_of(families, "task_network_receive_bytes_total", "it-job") == [per_container]
        assert _series_of(families, "task_cpu_seconds_total", "it-job") == [per_container]
        stop = podman("stop", "-t", "0", name)
        assert stop.returncode == 0, stop.stderr
        assert _series_of(list(collector.collect()), "task_mem_usage_byte", "it-job") == []


def test_a_host_network_job_has_no_network_series(busybox_image: str) -> None:
    with container(f"{PREFIX}-hostnet", busybox_image, "--network", "host", *PAI_ENV):
        families = list(host_collector().collect())
        assert len(_series_of(families, "task_mem_usage_byte", "it-job")) == 1
        assert _series_of(families, "task_network_receive_bytes_total", "it-job") == []
        assert _series_of(families, "task_net_in_byte", "it-job") == []


@pytest.fixture
def compat_socket(tmp_path: Path) -> Iterator[Path]:
    """podman's Docker-compatible API service on a private socket: a real daemon speaking the Docker Engine API."""
    sock = tmp_path / "docker.sock"
    with subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) as service:  # fmt: skip
        try:
            deadline = time.monotonic() + 60  # a liveness bound: podman starts slowly on a busy machine
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sock.exists(), "podman system service did not create its socket"
            yield sock
        finally:
            service.terminate()
            service.wait(timeout=30)


def test_labels_come_from_the_runtime_socket_when_it_answers(busybox_image: str, compat_socket: Path) -> None:
    name = f"{PREFIX}-label"
    collector = host_collector(docker_socket=str(compat_socket))
    with container(name, busybox_image, "--label", "PAI_JOB_NAME=from-label", "-e", "PAI_USER_NAME=env-user"):
        families = list(collector.collect())
        assert samples(families, "docker_daemon_count") == {(("error", "ok"),): 1.0}
        (usage,) = _series_of(families, "task_mem_usage_byte", "from-label")
        assert usage["username"] == "env-user"


def test_a_docker_socket_nobody_listens_on_is_reported(tmp_path: Path) -> None:
    dead = tmp_path / "dead.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(dead))
    listener.close()  # the socket file stays, nobody listens: connection refused
    families = list(host_collector(docker_socket=str(dead), socket_timeout=0.5).collect())
    assert samples(families, "docker_daemon_count") == {(("error", "connection refused"),): 1.0}
