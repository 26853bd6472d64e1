"""One structured log line per unhealthy pod, container and node, so that the journal explains an alert.

Lines are ``key=value`` pairs after an event name, e.g.::

    unhealthy_pod namespace=default pod=job-1-worker-0 kind=job service= job=job-1 phase=pending ready=false ...
    unhealthy_container namespace=pai pod=prometheus-0 container=prometheus state=waiting reason=CrashLoopBackOff ...
    unhealthy_node node=node7 host_ip=10.0.0.7 ready=false memory_pressure=false ... unschedulable=false

At most ``limit`` lines per kind and collection are written; the rest are counted in the cycle's summary line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pai_monitoring.watchdog.model import NodeView, PodView, container_is_unhealthy

log = logging.getLogger("pai_monitoring.watchdog")

_HEALTHY_POD_PHASES = frozenset({"running", "succeeded"})


def kv(pairs: Iterable[tuple[str, object]]) -> str:
    """``key=value`` pairs; values with spaces, quotes or ``=`` are double-quoted."""
    out = []
    for key, value in pairs:
        text = "" if value is None else str(value)
        if any(ch in text for ch in ' "=\n\t'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
        out.append(f"{key}={text}")
    return " ".join(out)


def pod_is_unhealthy(pod: PodView) -> bool:
    """Pending, failed or unknown, or running but not ready (a finished pod is healthy)."""
    return pod.phase not in _HEALTHY_POD_PHASES or (pod.phase == "running" and pod.ready != "true")


def node_is_unhealthy(node: NodeView) -> bool:
    return (
        node.ready != "true"
        or "true" in (node.memory_pressure, node.disk_pressure, node.pid_pressure, node.network_unavailable)
        or node.unschedulable
    )


class UnhealthyReport:
    """Logs unhealthy objects as they stream past, up to ``limit`` lines per kind, and counts them all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts = {"pods": 0, "containers": 0, "nodes": 0}

    def _emit(self, kind: str, event: str, pairs: Iterable[tuple[str, object]]) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= self.limit:
            log.warning("%s %s", event, kv(pairs))

    def pod(self, pod: PodView) -> None:
        kind = "service" if pod.service_name is not None else "job" if pod.job_name is not None else "other"
        if pod_is_unhealthy(pod):
            self._emit(
                "pods",
                "unhealthy_pod",
                [
                    ("namespace", pod.namespace),
                    ("pod", pod.name),
                    ("kind", kind),
                    ("service", pod.service_name or ""),
                    ("job", pod.job_name or ""),
                    ("phase", pod.phase),
                    ("ready", pod.ready),
                    ("scheduled", pod.pod_scheduled),
                    ("node", pod.node_name),
                    ("host_ip", pod.host_ip),
                    ("reason", pod.reason),
                    ("message", pod.message[:300]),
                ],
            )
        for container in pod.containers:
            if container_is_unhealthy(pod, container):
                self._emit(
                    "containers",
                    "unhealthy_container",
                    [
                        ("namespace", pod.namespace),
                        ("pod", pod.name),
                        ("container", container.name),
                        ("state", container.state),
                        ("ready", str(container.ready).lower()),
                        ("reason", container.reason),
                        ("exit_code", "" if container.exit_code is None else container.exit_code),
                        ("restarts", container.restarts),
                        ("node", pod.node_name),
                    ],
                )

    def node(self, node: NodeView) -> None:
        if node_is_unhealthy(node):
            self._emit(
                "nodes",
                "unhealthy_node",
                [
                    ("node", node.name),
                    ("host_ip", node.host_ip),
                    ("ready", node.ready),
                    ("memory_pressure", node.memory_pressure),
                    ("disk_pressure", node.disk_pressure),
                    ("pid_pressure", node.pid_pressure),
                    ("network_unavailable", node.network_unavailable),
                    ("unschedulable", str(node.unschedulable).lower()),
                ],
            )

    def suppressed(self) -> dict[str, int]:
        """Unhealthy objects per kind that were counted but not logged."""
        return {kind: max(0, count - self.limit) for kind, count in self.counts.items()}
