"""The container runtimes' on-disk state, read without asking a daemon.

* containerd keeps one directory per live task, ``<state>/<namespace>/<id>/``, holding the OCI bundle's
  ``config.json`` (environment and annotations; the CRI plugin's annotations name the pod, namespace and container).
  Namespace ``k8s.io`` is Kubernetes, ``moby`` is Docker. A task directory disappears when the task is deleted.
* podman keeps ``<graphroot>/overlay-containers/containers.json`` (ids and names of the containers it knows),
  ``<graphroot>/overlay-containers/<id>/userdata/config.json`` (the OCI bundle) and, while the container runs,
  a live ``conmon`` whose pid is in ``<runroot>/overlay-containers/<id>/userdata/conmon.pid``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from pai_monitoring.jobs.fastio import read_bytes
from pai_monitoring.jobs.procfs import parse_environ, process_exists

MAX_BUNDLE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    """What an OCI ``config.json`` says about a container."""

    env: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


def parse_bundle(data: bytes) -> Bundle | None:
    try:
        spec = json.loads(data)
    except ValueError:
        return None
    if not isinstance(spec, dict):
        return None
    process = spec.get("process") or {}
    env_list = process.get("env") or [] if isinstance(process, dict) else []
    env = parse_environ("\0".join(str(e) for e in env_list).encode())
    annotations = spec.get("annotations") or {}
    return Bundle(env=env, annotations={str(k): str(v) for k, v in annotations.items()})


def read_bundle(path: str) -> Bundle | None:
    data = read_bytes(path)
    if data is None or len(data) > MAX_BUNDLE_BYTES:
        return None
    return parse_bundle(data)


class ContainerdState:
    """Live tasks of a containerd, from its ``io.containerd.runtime.v2.task`` directory."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir

    def tasks(self) -> dict[str, str] | None:
        """Container id -> namespace of every live task; ``None`` when the state directory is absent."""
        try:
            namespaces = [e.name for e in os.scandir(self.state_dir) if e.is_dir()]
        except OSError:
            return None
        found: dict[str, str] = {}
        for namespace in namespaces:
            try:
                found.update((e.name, namespace) for e in os.scandir(f"{self.state_dir}/{namespace}"))
            except OSError:
                continue
        return found

    def bundle(self, namespace: str, container_id: str) -> Bundle | None:
        return read_bundle(f"{self.state_dir}/{namespace}/{container_id}/config.json")


class PodmanState:
    """Containers podman knows, from its storage directories (root podman: ``/var/lib`` and ``/run``)."""

    def __init__(self, graph_root: str, run_root: str, proc_root: str) -> None:
        self.graph_root = graph_root
        self.run_root = run_root
        self.proc_root = proc_root
        self._names_mtime: float | None = None
        self._names: dict[str, str] | None = None

    def names(self) -> dict[str, str] | None:
        """Container id -> name of every container podman knows; ``None`` when podman's storage is absent."""
        path = f"{self.graph_root}/overlay-containers/containers.json"
        try:
            mtime = os.stat(path).st_mtime  # noqa: PTH116 - str path
        except OSError:
            return None
        if mtime != self._names_mtime:
            data = read_bytes(path)
            try:
                items = json.loads(data) if data else []
            except ValueError:
                return self._names
            self._names = {
                str(c.get("id")): str((c.get("names") or ["unknown"])[0]) for c in items if isinstance(c, dict)
            }
            self._names_mtime = mtime
        return self._names

    def bundle(self, container_id: str) -> Bundle | None:
        return read_bundle(f"{self.graph_root}/overlay-containers/{container_id}/userdata/config.json")

    def running(self, container_id: str) -> bool | None:
        """Whether the container's ``conmon`` is alive; ``None`` when podman left no pid file to judge by."""
        data = read_bytes(f"{self.run_root}/overlay-containers/{container_id}/userdata/conmon.pid")
        if data is None:
            return None
        try:
            return process_exists(self.proc_root, int(data))
        except ValueError:
            return None
