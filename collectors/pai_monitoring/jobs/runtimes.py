"""What the container runtimes know about a container, asked once per cycle without depending on any of them.

* **Docker** (or any Docker Engine API, such as podman's service): ``/_ping`` for health, the container list with
  states, and one inspect per new container for its labels, environment and name (:mod:`.docker_api`).
* **containerd** keeps one directory per live task, ``<state>/<namespace>/<id>/``, holding the OCI bundle's
  ``config.json`` (environment; the CRI plugin's annotations name the pod, namespace and container). Namespace
  ``k8s.io`` is Kubernetes, ``moby`` is Docker. The directory disappears when the task is deleted.
* **containers/storage** (podman and CRI-O share it): ``<graphroot>/overlay-containers/containers.json`` lists
  every container the store holds; ``<graphroot>/overlay-containers/<id>/userdata/config.json`` is its OCI spec
  (CRI-O's carries the kubelet's labels, ``io.kubernetes.pod.name`` and the rest, and
  ``io.kubernetes.cri-o.ContainerType``). conmon writes ``userdata/exit`` there when the container's process has
  exited (CRI-O), and podman's conmon keeps its pid in ``<runroot>/overlay-containers/<id>/userdata/conmon.pid``.

* **Slurm** needs no daemon either: a job's slurmstepd processes sit in its own cgroup (:func:`slurm_status`).

Each source is optional: a runtime that is not installed, or a daemon that does not answer within the timeout,
contributes nothing; containers are still found (from cgroups) and named (from ``/proc``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from pai_monitoring.jobs.docker_api import DockerClient, socket_answers
from pai_monitoring.jobs.kernel import (
    PIDS_HEAD_CAP,
    Hierarchies,
    list_dirs,
    parse_environ,
    process_exists,
    read_file,
    read_head,
    read_stat,
)
from pai_monitoring.jobs.layouts import SLURM_STEP_PREFIX, SLURM_STEPD_DIR, SLURMSTEPD, Unit

MAX_BUNDLE_BYTES = 4 * 1024 * 1024
MAX_LISTING_BYTES = 32 * 1024 * 1024
ALIVE_DOCKER_STATES = frozenset({"running", "paused", "restarting", "created"})
RUNNING, STOPPED, UNKNOWN = "running", "stopped", "unknown"
MAX_STEPD_CHECKS = 64
ROOTLESS_MARK = "/user@"


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
    if not isinstance(annotations, dict):
        annotations = {}
    return Bundle(env=env, annotations={str(k): str(v) for k, v in annotations.items()})


def read_bundle(path: str) -> Bundle | None:
    data = read_file(path, MAX_BUNDLE_BYTES)
    return None if data is None else parse_bundle(data)


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
            except FileNotFoundError:
                continue  # a namespace removed meanwhile
            except OSError:
                return None  # a namespace we cannot list: its tasks would look gone
        return found

    def bundle(self, namespace: str, container_id: str) -> Bundle | None:
        return read_bundle(f"{self.state_dir}/{namespace}/{container_id}/config.json")


class ContainersStorage:
    """Containers in a containers/storage store (root podman and CRI-O: ``/var/lib`` and ``/run``)."""

    def __init__(self, graph_root: str, run_root: str, proc_root: str) -> None:
        self.graph_root = graph_root
        self.run_root = run_root
        self.proc_root = proc_root
        self._names_mtime: float | None = None
        self._names: dict[str, str] | None = None

    def names(self) -> dict[str, str] | None:
        """Container id -> name of every container the store holds; ``None`` when the store is absent."""
        path = f"{self.graph_root}/overlay-containers/containers.json"
        try:
            mtime = os.stat(path).st_mtime  # noqa: PTH116 - str path
        except OSError:
            return None
        if mtime != self._names_mtime:
            data = read_file(path, MAX_LISTING_BYTES)
            try:
                items = json.loads(data) if data else []
            except ValueError:
                return self._names
            if not isinstance(items, list):
                return self._names
            self._names = {
                str(c.get("id")): str((c.get("names") or ["unknown"])[0]) for c in items if isinstance(c, dict)
            }
            self._names_mtime = mtime
        return self._names

    def _userdata(self, root: str, container_id: str) -> str:
        return f"{root}/overlay-containers/{container_id}/userdata"

    def bundle(self, container_id: str) -> Bundle | None:
        return read_bundle(self._userdata(self.graph_root, container_id) + "/config.json")

    def exited(self, container_id: str) -> bool:
        """Whether conmon has recorded the container's exit (CRI-O's ``userdata/exit``)."""
        return os.path.exists(self._userdata(self.graph_root, container_id) + "/exit")  # noqa: PTH110

    def conmon_alive(self, container_id: str) -> bool | None:
        """Whether podman's ``conmon`` for the container runs; ``None`` when there is no pid file to judge by."""
        data = read_file(self._userdata(self.run_root, container_id) + "/conmon.pid", 64)
        if data is None:
            return None
        try:
            return process_exists(self.proc_root, int(data))
        except ValueError:
            return None


@dataclass(frozen=True)
class RuntimeView:
    """One cycle's answers of the runtimes."""

    docker_health: str | None
    """``docker_daemon_count``'s ``error`` label, ``None`` when there is no docker socket."""
    containerd_health: str | None
    docker_states: dict[str, str] | None
    """Container id -> state from the docker daemon, ``None`` when it did not answer."""
    containerd_tasks: dict[str, str] | None
    """Container id -> namespace of containerd's live tasks, ``None`` without a state directory."""
    storage_names: dict[str, str] | None
    """Container id -> name in containers/storage (podman, CRI-O), ``None`` without a store."""

    def runtime_of(self, unit: Unit) -> str:
        """The runtime of a container, resolving ``cri`` from the runtimes' state when possible."""
        if unit.runtime != "cri":
            return unit.runtime
        if self.containerd_tasks is not None and self.containerd_tasks.get(unit.ident) == "k8s.io":
            return "containerd"
        if self.docker_states is not None and unit.ident in self.docker_states:
            return "docker"
        return "cri"


class RuntimeSources:
    """The runtimes' sockets and state directories, asked once per cycle."""

    def __init__(
        self,
        docker_socket: str,
        containerd_socket: str,
        containerd_state_dir: str,
        storage_graph_root: str,
        storage_run_root: str,
        proc_root: str,
        timeout: float,
    ) -> None:
        self.docker = DockerClient(docker_socket, timeout) if docker_socket else None
        self.containerd_socket = containerd_socket
        self.containerd = ContainerdState(containerd_state_dir) if containerd_state_dir else None
        self.storage = (
            ContainersStorage(storage_graph_root, storage_run_root, proc_root) if storage_graph_root else None
        )
        self.timeout = timeout
        self._docker_seen = False
        self._containerd_seen = False
        self._store_lists: set[str] = set()
        """The runtimes whose state (containerd's task directory, containers/storage for ``podman`` and ``crio``)
        has listed a container of this node: only then does a container missing from it count as ended."""
        self._inspect_until = 0.0

    def may_inspect(self) -> bool:
        """Whether this cycle's Docker API budget (two socket timeouts) has time left for one more inspect.

        A daemon that answers ``/_ping`` but is slow to inspect would otherwise cost one timeout per new container.
        """
        return time.monotonic() < self._inspect_until

    def view(self) -> RuntimeView:
        self._inspect_until = time.monotonic() + 2 * self.timeout
        docker_health = containerd_health = None
        states = None
        if self.docker is not None:
            if os.path.exists(self.docker.socket_path):  # noqa: PTH110 - str path
                self._docker_seen = True
                docker_health = self.docker.ping()
                if docker_health == "ok":
                    states = self.docker.container_states()
            elif self._docker_seen:
                docker_health = "no socket"
        if self.containerd_socket:
            if os.path.exists(self.containerd_socket):  # noqa: PTH110 - str path
                self._containerd_seen = True
                containerd_health = socket_answers(self.containerd_socket, self.timeout)
            elif self._containerd_seen:
                containerd_health = "no socket"
        return RuntimeView(
            docker_health=docker_health,
            containerd_health=containerd_health,
            docker_states=states,
            containerd_tasks=self.containerd.tasks() if self.containerd is not None else None,
            storage_names=self.storage.names() if self.storage is not None else None,
        )

    def learn(self, units: list[Unit], view: RuntimeView) -> None:
        """Note which runtimes' state lists containers found in this node's cgroups (once seen, for good)."""
        if {"containerd", "crio", "podman"} <= self._store_lists:
            return
        for unit in units:
            if unit.kind != "container" or unit.runtime == "docker":
                continue
            runtime = view.runtime_of(unit)
            if runtime in ("containerd", "cri") and unit.ident in (view.containerd_tasks or {}):
                self._store_lists.add("containerd")
            elif runtime in ("crio", "podman") and unit.ident in (view.storage_names or {}):
                self._store_lists.add(runtime)

    def status(self, unit: Unit, view: RuntimeView, runtime: str) -> str | None:
        """``running``, ``stopped`` or ``unknown`` (its ``runtime``, as :meth:`RuntimeView.runtime_of` names it,
        no longer knows it); ``None`` when it cannot be judged: that runtime's state is unreadable or not the one
        in use, or the unit is a rootless container (below a systemd user manager, ``user@<uid>.service``), which
        the system's runtimes do not list."""
        if ROOTLESS_MARK in unit.path:
            return None
        states, tasks, names = view.docker_states, view.containerd_tasks, view.storage_names
        if states is not None and unit.ident in states:
            return RUNNING if states[unit.ident] in ALIVE_DOCKER_STATES else STOPPED
        if runtime == "docker" and states is not None:
            return UNKNOWN
        if runtime in ("containerd", "cri") and tasks is not None:
            if unit.ident in tasks:
                return RUNNING
            # another containerd (k3s keeps its state elsewhere) may run it, unless ours lists this node's containers
            return UNKNOWN if "containerd" in self._store_lists else None
        if runtime in ("crio", "podman") and names is not None and self.storage is not None:
            if unit.ident not in names:
                # only a store that has listed this runtime's containers is the one it uses (podman's and CRI-O's
                # roots are configurable): until then an unlisted container says nothing
                return UNKNOWN if runtime in self._store_lists else None
            if runtime == "crio":
                return STOPPED if self.storage.exited(unit.ident) else RUNNING
            alive = self.storage.conmon_alive(unit.ident)
            return None if alive is None else RUNNING if alive else STOPPED
        return None


def slurm_status(h: Hierarchies, unit: Unit, proc_root: str) -> str | None:
    """``running`` while a slurmstepd of the job lives, ``stopped`` once none does although the job's cgroup
    still holds processes; ``None`` where the layout does not say (cgroup v1 without proctrack/cgroup).

    cgroup/v2 keeps each step's slurmstepd in ``<job>/step_<s>/slurm``, and a stepd that ends removes that
    directory even when a task it could not kill keeps the step's ``user`` directory; cgroup/v1 with
    proctrack/cgroup keeps the stepds in the job's own directory of the freezer hierarchy."""
    if h.version == 2:
        base = h.walk_root + unit.path
        steps = [s for s in list_dirs(base) or [] if s.startswith(SLURM_STEP_PREFIX)]
        if not steps:
            return None
        stepd_dirs = [f"{base}/{step}/{SLURM_STEPD_DIR}" for step in steps]
    elif h.freezer is not None and os.path.isdir(h.freezer + unit.path):  # noqa: PTH112 - str path
        stepd_dirs = [h.freezer + unit.path]
    else:
        return None
    for directory in stepd_dirs:
        data = read_head(directory + "/cgroup.procs", PIDS_HEAD_CAP) or b""
        for pid in data.split()[:MAX_STEPD_CHECKS]:
            stat = read_stat(proc_root, int(pid)) if pid.isdigit() else None
            if stat is not None and stat.comm == SLURMSTEPD:
                return RUNNING
    return STOPPED
