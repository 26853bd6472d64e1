"""Which collectors each daemon has, by name.

Entries are ``module:Class`` strings so that a collector's module is imported only when the daemon is built,
and a disabled collector is never constructed.
"""

from __future__ import annotations

import importlib
from typing import Any

from pai_monitoring.runtime.collector import Collector

JOB_EXPORTER: dict[str, str] = {
    "node_health": "pai_monitoring.node_health:NodeHealthCollector",
    "gpu": "pai_monitoring.gpu.collector:GpuCollector",
    "jobs": "pai_monitoring.jobs.collector:JobsCollector",
}

WATCHDOG: dict[str, str] = {
    "kubernetes": "pai_monitoring.watchdog.collector:KubernetesCollector",
}

DAEMONS: dict[str, dict[str, str]] = {"pai-job-exporter": JOB_EXPORTER, "pai-watchdog": WATCHDOG}

CollectorClass = type[Collector[Any]]


def load(entry: str) -> CollectorClass:
    """Import the collector class named by a ``module:Class`` entry."""
    module_name, _, class_name = entry.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Collector)):
        raise TypeError(f"{entry} is not a Collector subclass")
    return cls


def collector_classes(daemon: str) -> dict[str, CollectorClass]:
    """The collector classes of one daemon, by collector name, in registry order."""
    classes = {name: load(entry) for name, entry in DAEMONS[daemon].items()}
    for name, cls in classes.items():
        if cls.name != name:
            raise TypeError(f"registry name {name!r} does not match {cls.__name__}.name {cls.name!r}")
    return classes
