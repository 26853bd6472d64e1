"""What a scrape (or the textfile writer, or ``--once``) serves: the fresh snapshots plus the runtime's own metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric

from pai_monitoring import __version__
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.runtime.scheduler import CollectorRunner, RunnerStatus
from pai_monitoring.runtime.textformat import render_families

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
DROPPED = MetricSpec(
    "pai_exporter_http_dropped_connections_total",
    "counter",
    "HTTP connections the exporter closed because of the client: connection_limit (the oldest idle connection when "
    "--web.max-connections were open), read_timeout (the request did not arrive in time), headers_too_large, "
    "malformed_request, write_timeout (the client did not read the answer in time), tls_handshake.",
    ("reason",),
)
AUTH_FAILURES = MetricSpec(
    "pai_exporter_http_auth_failures_total",
    "counter",
    "Requests refused by basic auth: denied (401, wrong or missing credentials) or throttled (429, too many "
    "password checks waiting).",
    ("reason",),
)
OPEN_CONNECTIONS = MetricSpec(
    "pai_exporter_http_open_connections", "gauge", "HTTP connections open now (at most --web.max-connections)."
)
RUNTIME_METRICS: tuple[MetricSpec, ...] = (
    ITERATIONS,
    DURATION,
    SUCCESS,
    LAST_SUCCESS,
    BUILD_INFO,
    REJECTED,
    DROPPED,
    AUTH_FAILURES,
    OPEN_CONNECTIONS,
)
DROP_REASONS = ("connection_limit", "read_timeout", "headers_too_large", "malformed_request", "write_timeout",
                "tls_handshake")  # fmt: skip
AUTH_FAILURE_REASONS = ("denied", "throttled")


class HttpStats:
    """What the HTTP server counts. Written by the server's event-loop thread only, read by scrapes."""

    def __init__(self) -> None:
        self.rejected = 0
        self.dropped: Counter[str] = Counter()
        self.auth_failures: Counter[str] = Counter()
        self.open_connections = 0

    def families(self) -> list[Metric]:
        rejected = REJECTED.counter()
        rejected.add_metric([], self.rejected)
        dropped = DROPPED.counter()
        for reason in DROP_REASONS:
            dropped.add_metric([reason], self.dropped[reason])
        auth = AUTH_FAILURES.counter()
        for reason in AUTH_FAILURE_REASONS:
            auth.add_metric([reason], self.auth_failures[reason])
        connections = OPEN_CONNECTIONS.gauge()
        connections.add_metric([], self.open_connections)
        return [rejected, dropped, auth, connections]


class Exposition:
    """What one scrape serves: each fresh snapshot's pre-rendered text, the runtime's own metrics and, for HTTP,
    the server's counters and the process's ``process_*``/``python_*`` metrics.

    A snapshot is rendered once, when its collector finishes, so a scrape only adds a few small families: a big
    snapshot (a 150,000-pod cluster) costs its collector thread, not every scrape, and :meth:`parts` hands the
    snapshots' bytes out without copying them. Collectors never share a family name (a test checks), so joining
    their texts is a valid exposition.
    """

    def __init__(self, daemon: str, runners: Sequence[CollectorRunner], http: HttpStats | None) -> None:
        self._daemon = daemon
        self._runners = runners
        self._http = http
        self._process: CollectorRegistry | None = None
        if http is not None:
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
        if self._http is not None:
            families.extend(self._http.families())
        return families

    def parts(self) -> list[bytes]:
        """The exposition in pieces: the snapshots' own bytes (shared, not copied) and the runtime's."""
        statuses = [runner.status() for runner in self._runners]
        parts = [status.snapshot.rendered for status in statuses if status.snapshot is not None]
        parts.append(render_families(self._runtime_families(statuses)))
        if self._process is not None:
            parts.append(generate_latest(self._process))
        return parts

    def render(self) -> bytes:
        return b"".join(self.parts())


def http_exposition(daemon: str, runners: Sequence[CollectorRunner], http: HttpStats) -> Exposition:
    """What ``/metrics`` serves: snapshots, runtime and HTTP metrics and the process's ``process_*``/``python_*``."""
    return Exposition(daemon, runners, http)


def file_exposition(daemon: str, runners: Sequence[CollectorRunner]) -> Exposition:
    """For the textfile and ``--once``: no HTTP or ``process_*`` series (node_exporter has its own)."""
    return Exposition(daemon, runners, None)
