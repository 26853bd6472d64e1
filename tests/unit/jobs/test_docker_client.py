"""The Docker API client's failure paths: every one ends in a bounded label, never a hang or an exception."""

from __future__ import annotations

import socket
from pathlib import Path

from pai_monitoring.jobs.docker_api import DockerClient, inspect_metadata, socket_answers


def test_a_daemon_that_accepts_but_never_answers_times_out(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(4)  # connections queue up; nothing reads or replies
        client = DockerClient(str(path), timeout=0.2)
        assert client.ping() == "timeout"
        assert client.container_states() is None
        assert client.inspect("abc") is None
        assert socket_answers(str(path), 0.2) == "ok"  # containerd's check is only a connect


def test_missing_and_refusing_sockets_have_their_own_labels(tmp_path: Path) -> None:
    assert DockerClient(str(tmp_path / "absent.sock"), timeout=0.2).ping() == "no socket"
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(stale))  # bound, never listening: connection refused
        assert DockerClient(str(stale), timeout=0.2).ping() == "connection refused"
        assert socket_answers(str(stale), 0.2) == "connection refused"


def test_inspect_metadata_reads_labels_environment_and_name() -> None:
    labels, env, name = inspect_metadata(
        {"Name": "/k8s_main_pod", "Config": {"Labels": {"a": "1"}, "Env": ["X=1=2", "BROKEN", "PAI_JOB_NAME=j"]}}
    )
    assert (labels, env, name) == ({"a": "1"}, {"X": "1=2", "PAI_JOB_NAME": "j"}, "k8s_main_pod")
    assert inspect_metadata({"Config": None}) == ({}, {}, "")
