"""What a scrape (or the textfile writer, or ``--once``) serves: the fresh snapshots plus the runtime's own metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector as PromCollector

from pai_monitoring import __version__
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.runtime.scheduler import CollectorRunner

ITERATIONS = MetricSpec(
    "collector_iteration_count_total",
    "counter",
    "Collection iterations started per collector (the original job-exporter's name; it stops moving when a "
    "collector hangs).",
    ("name",),
)
DURATION = MetricSpec(
    "pai_scrape_collector_duration_seconds",
    "gauge",
    "Duration of the collector's last finished iteration, or of the current one once it is past its deadline.",
    ("collector",),
)
SUCCESS = MetricSpec(
    "pai_scrape_collector_success",
    "gauge",
    "1 when the collector's last iteration succeeded within its deadline and its snapshot has not expired.",
    ("collector",),
)
LAST_SUCCESS = MetricSpec(
    "pai_scrape_collector_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the collector's last successful iteration.",
    ("collector",),
)
BUILD_INFO = MetricSpec(
    "pai_exporter_build_info", "gauge", "Version of the running pai-monitoring daemon; always 1.", ("version", "daemon")
)
REJECTED = MetricSpec(
    "pai_exporter_http_rejected_requests_total",
    "counter",
    "HTTP requests answered 503 because --web.max-requests were already being served.",
)
RUNTIME_METRICS: tuple[MetricSpec, ...] = (ITERATIONS, DURATION, SUCCESS, LAST_SUCCESS, BUILD_INFO, REJECTED)


class RejectCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def inc(self) -> None:
        with self._lock:
            self.value += 1


class SnapshotCollector(PromCollector):
    """A ``prometheus_client`` collector that serves the runners' fresh snapshots and their health."""

    def __init__(self, daemon: str, runners: Sequence[CollectorRunner], rejected: RejectCounter | None = None) -> None:
        self._daemon = daemon
        self._runners = runners
        self._rejected = rejected

    def describe(self) -> Iterable[Metric]:
        """Nothing: describing must never touch a collector (NVML, the Kubernetes API)."""
        return ()

    def collect(self) -> Iterable[Metric]:
        iterations, duration = ITERATIONS.counter(), DURATION.gauge()
        success, last_success = SUCCESS.gauge(), LAST_SUCCESS.gauge()
        for runner in self._runners:
            status = runner.status()
            if status.snapshot is not None:
                yield from status.snapshot.families
            iterations.add_metric([status.name], status.iterations)
            success.add_metric([status.name], 1.0 if status.success else 0.0)
            if status.duration_seconds is not None:
                duration.add_metric([status.name], status.duration_seconds)
            if status.last_success_wall is not None:
                last_success.add_metric([status.name], status.last_success_wall)
        build = BUILD_INFO.gauge()
        build.add_metric([__version__, self._daemon], 1.0)
        yield from (iterations, duration, success, last_success, build)
        if self._rejected is not None:
            rejected = REJECTED.counter()
            rejected.add_metric([], self._rejected.value)
            yield rejected


def http_registry(daemon: str, runners: Sequence[CollectorRunner], rejected: RejectCounter) -> CollectorRegistry:
    """The registry behind ``/metrics``: snapshots, runtime metrics and the process's own ``process_*``/``python_*``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(daemon, runners, rejected))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def file_registry(daemon: str, runners: Sequence[CollectorRunner]) -> CollectorRegistry:
    """The registry for the textfile and ``--once``: no ``process_*`` series, which node_exporter has of its own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(daemon, runners))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
