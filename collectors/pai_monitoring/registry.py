"""Which collectors each daemon has, by name: the tables the commands hand to the runtime.

Entries are ``module:Class`` strings so that a collector's module is imported only when the daemon is built,
and a disabled collector is never constructed.
"""

from __future__ import annotations

from pai_monitoring.runtime.loader import CollectorClass, CollectorTable, load_collectors

JOB_EXPORTER: dict[str, str] = {
    "node_health": "pai_monitoring.node_health:NodeHealthCollector",
    "gpu": "pai_monitoring.gpu.collector:GpuCollector",
    "jobs": "pai_monitoring.jobs.collector:JobsCollector",
}

WATCHDOG: dict[str, str] = {
    "kubernetes": "pai_monitoring.watchdog.collector:KubernetesCollector",
}

DAEMONS: dict[str, CollectorTable] = {"pai-job-exporter": JOB_EXPORTER, "pai-watchdog": WATCHDOG}


def collector_classes(daemon: str) -> dict[str, CollectorClass]:
    """The collector classes of one daemon, by collector name, in registry order."""
    return load_collectors(DAEMONS[daemon])
