"""What a scrape (or the textfile writer, or ``--once``) serves: the fresh snapshots plus the runtime's own metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector as PromCollector

from pai_monitoring import __version__
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.runtime.scheduler import CollectorRunner, RunnerStatus

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


class _Families(PromCollector):
    """A fixed list of families, so that ``generate_latest`` can render them."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render_families(families: Iterable[Metric]) -> bytes:
    """The text exposition of some families. Collectors' snapshots are rendered once, in their own thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


class Exposition:
    """What one scrape serves: each fresh snapshot's pre-rendered text, the runtime's own metrics and, for HTTP,
    the process's ``process_*``/``python_*`` metrics.

    A snapshot is rendered once, when its collector finishes, so a scrape only joins bytes: a big snapshot (a
    150,000-pod cluster) costs its collector thread, not every scrape. Collectors never share a family name
    (a test checks), so joining their texts is a valid exposition.
    """

    def __init__(
        self, daemon: str, runners: Sequence[CollectorRunner], rejected: RejectCounter | None, with_process: bool
    ) -> None:
        self._daemon = daemon
        self._runners = runners
        self._rejected = rejected
        self._process: CollectorRegistry | None = None
        if with_process:
            self._process = CollectorRegistry(auto_describe=False)
            ProcessCollector(registry=self._process)
            PlatformCollector(registry=self._process)
            GCCollector(registry=self._process)

    def _runtime_families(self, statuses: Sequence[RunnerStatus]) -> list[Metric]:
        iterations, duration = ITERATIONS.counter(), DURATION.gauge()
        success, last_success = SUCCESS.gauge(), LAST_SUCCESS.gauge()
        for status in statuses:
            iterations.add_metric([status.name], status.iterations)
            success.add_metric([status.name], 1.0 if status.success else 0.0)
            if status.duration_seconds is not None:
                duration.add_metric([status.name], status.duration_seconds)
            if status.last_success_wall is not None:
                last_success.add_metric([status.name], status.last_success_wall)
        build = BUILD_INFO.gauge()
        build.add_metric([__version__, self._daemon], 1.0)
        families: list[Metric] = [iterations, duration, success, last_success, build]
        if self._rejected is not None:
            rejected = REJECTED.counter()
            rejected.add_metric([], self._rejected.value)
            families.append(rejected)
        return families

    def render(self) -> bytes:
        statuses = [runner.status() for runner in self._runners]
        parts = [status.snapshot.rendered for status in statuses if status.snapshot is not None]
        parts.append(render_families(self._runtime_families(statuses)))
        if self._process is not None:
            parts.append(generate_latest(self._process))
        return b"".join(parts)


def http_registry(daemon: str, runners: Sequence[CollectorRunner], rejected: RejectCounter) -> Exposition:
    """What ``/metrics`` serves: snapshots, runtime metrics and the process's own ``process_*``/``python_*``."""
    return Exposition(daemon, runners, rejected, with_process=True)


def file_registry(daemon: str, runners: Sequence[CollectorRunner]) -> Exposition:
    """For the textfile and ``--once``: no ``process_*`` series, which node_exporter has of its own."""
    return Exposition(daemon, runners, None, with_process=False)


def render(exposition: Exposition) -> bytes:
    return exposition.render()
