"""One cycle's view of the container runtimes: daemon health, which containers each knows, and their metadata.

Each source is optional: a runtime that is not installed, or a daemon that does not answer within the timeout,
simply contributes nothing, and containers are still found (from cgroups) and named (from ``/proc``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from pai_monitoring.jobs.cgroups import Unit
from pai_monitoring.jobs.docker import DockerClient, socket_answers
from pai_monitoring.jobs.localstate import ContainerdState, PodmanState

ALIVE_DOCKER_STATES = frozenset({"running", "paused", "restarting"})


@dataclass(frozen=True)
class RuntimeView:
    docker_health: str | None
    """``docker_daemon_count``'s ``error`` label, ``None`` when there is no docker socket."""
    containerd_health: str | None
    docker_states: dict[str, str] | None
    """Container id -> state from the docker daemon, ``None`` when it did not answer."""
    containerd_tasks: dict[str, str] | None
    """Container id -> namespace of containerd's live tasks, ``None`` without a state directory."""
    podman_names: dict[str, str] | None

    def runtime_of(self, unit: Unit) -> str:
        """The runtime of a container, resolving ``cri`` from the runtimes' state when possible."""
        if unit.runtime != "cri":
            return unit.runtime
        if self.containerd_tasks is not None and self.containerd_tasks.get(unit.ident) == "k8s.io":
            return "containerd"
        if self.docker_states is not None and unit.ident in self.docker_states:
            return "docker"
        return "cri"

    def status(self, unit: Unit) -> str | None:
        """``running``, ``stopped`` or ``unknown`` (the runtime no longer knows it); ``None`` when unjudged."""
        runtime = self.runtime_of(unit)
        tasks, states = self.containerd_tasks, self.docker_states
        if states is not None and unit.ident in states:
            return "running" if states[unit.ident] in ALIVE_DOCKER_STATES else "stopped"
        if runtime == "docker" and states is not None:
            if unit.ident not in states:
                return "unknown"
            return "running" if states[unit.ident] in ALIVE_DOCKER_STATES else "stopped"
        if runtime in ("containerd", "cri") and tasks is not None:
            return "running" if unit.ident in tasks else "unknown"
        if runtime == "podman" and self.podman_names is not None:
            if unit.ident not in self.podman_names:
                return "unknown"
            return None  # the caller asks PodmanState.running(), which costs a file read
        return None


class RuntimeSources:
    """The runtimes' sockets and state directories, asked once per cycle."""

    def __init__(
        self,
        docker_socket: str,
        containerd_socket: str,
        containerd_state_dir: str,
        podman_graph_root: str,
        podman_run_root: str,
        proc_root: str,
        timeout: float,
    ) -> None:
        self.docker = DockerClient(docker_socket, timeout) if docker_socket else None
        self.containerd_socket = containerd_socket
        self.containerd = ContainerdState(containerd_state_dir) if containerd_state_dir else None
        self.podman = PodmanState(podman_graph_root, podman_run_root, proc_root) if podman_graph_root else None
        self.timeout = timeout
        self._docker_seen = False
        self._containerd_seen = False
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
            podman_names=self.podman.names() if self.podman is not None else None,
        )
