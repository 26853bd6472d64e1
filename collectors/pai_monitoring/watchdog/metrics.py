"""The watchdog's metric families: the original names and labels, filled from one collection's pods and nodes."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.watchdog.model import NodeView, PodView, container_is_unhealthy

POD_COUNT = MetricSpec(
    "pai_pod_count",
    "gauge",
    "1 per service pod (a pod with the service label, app), labelled with its phase and conditions.",
    ("service_name", "name", "namespace", "phase", "host_ip", "node_name", "initialized", "pod_scheduled", "ready"),
)
JOB_POD_COUNT = MetricSpec(
    "pai_job_pod_count",
    "gauge",
    "1 per job pod (a pod with the job label, jobName, and no service label), labelled with its phase and conditions,"
    " its owner (user label, userName) and the pod's status reason (e.g. Evicted).",
    (
        "job_name",
        "name",
        "phase",
        "host_ip",
        "node_name",
        "initialized",
        "pod_bound",
        "pod_scheduled",
        "ready",
        "username",
        "reason",
    ),
)
JOB_CONTAINER_STATUS = MetricSpec(
    "pai_job_container_status",
    "gauge",
    "1 per container of a job pod that is unhealthy: waiting, in an unknown state, terminated with a non-zero exit"
    " code, or running but not ready; labelled with its state, the state's reason and its exit code. A running and"
    " ready or successfully completed container has no series.",
    ("job_name", "username", "pod_name", "name", "namespace", "node_name", "state", "reason", "exit_code"),
)
JOB_CONTAINER_RESTARTS = MetricSpec(
    "pai_job_container_restarts_total",
    "counter",
    "Restarts of a container of a job pod, as the kubelet counts them (restartCount); only for containers that"
    " restarted, so a series appears with its first restart.",
    ("job_name", "username", "pod_name", "name", "namespace", "node_name"),
)
JOB_CONTAINER_LAST_TERMINATED = MetricSpec(
    "pai_job_container_last_terminated_timestamp_seconds",
    "gauge",
    "Unix time the previous run of a container of a job pod ended (lastState.terminated.finishedAt), labelled with"
    " that run's reason (e.g. OOMKilled) and exit code; only for containers that restarted.",
    ("job_name", "username", "pod_name", "name", "namespace", "node_name", "reason", "exit_code"),
)
OBJECTS_TIMESTAMP = MetricSpec(
    "pai_watchdog_objects_timestamp_seconds",
    "gauge",
    "Unix time of the last collection that read every pod and node (listed, or from a current watch cache), which"
    " the pod, node and GPU series describe. Older than the last collection while the API server fails: the series"
    " are then the last known state, not today's.",
)
CONTAINER_COUNT = MetricSpec(
    "pai_container_count",
    "gauge",
    "1 per container of a service pod, labelled with its state (running, waiting, terminated, unknown).",
    ("service_name", "pod_name", "name", "namespace", "state", "host_ip", "node_name", "ready"),
)
NODE_COUNT = MetricSpec(
    "pai_node_count",
    "gauge",
    "1 per node, labelled with its conditions (true, false, unknown) and whether it is cordoned.",
    (
        "host_ip",
        "node_name",
        "disk_pressure",
        "memory_pressure",
        "pid_pressure",
        "network_unavailable",
        "ready",
        "unschedulable",
    ),
)
API_SERVER_COUNT = MetricSpec(
    "k8s_api_server_count",
    "gauge",
    "1, with error=ok when the API server's health check and lists succeeded, else a short reason; host_ip is the"
    " server's host (IP address or name), url the URL the watchdog uses.",
    ("error", "host_ip", "url"),
)
NODE_GPU_TOTAL = MetricSpec(
    "k8s_node_gpu_total",
    "gauge",
    "GPUs the node offers (allocatable, else capacity) over the GPU resources.",
    ("host_ip",),
)
NODE_GPU_AVAILABLE = MetricSpec(
    "k8s_node_gpu_available",
    "gauge",
    "GPUs not requested by any running or pending pod on the node; 0 when the node is cordoned.",
    ("host_ip",),
)
NODE_GPU_RESERVED = MetricSpec(
    "k8s_node_gpu_reserved", "gauge", "GPUs left free on a cordoned node (0 on schedulable nodes).", ("host_ip",)
)
ERROR_LOG = MetricSpec(
    "process_error_log_total",
    "counter",
    "Problems met while collecting, by type (every type always present).",
    ("type",),
)
HEALTHZ_LATENCY = MetricSpec(
    "k8s_api_healthz_resp_latency_seconds", "histogram", "Latency of the API server's /readyz or /healthz check."
)
LIST_PODS_LATENCY = MetricSpec(
    "k8s_api_list_pods_latency_seconds", "histogram", "Latency of one list-pods request (one page)."
)
LIST_NODES_LATENCY = MetricSpec(
    "k8s_api_list_nodes_latency_seconds", "histogram", "Latency of one list-nodes request (one page)."
)
ALL: tuple[MetricSpec, ...] = (
    POD_COUNT,
    JOB_POD_COUNT,
    JOB_CONTAINER_STATUS,
    JOB_CONTAINER_RESTARTS,
    JOB_CONTAINER_LAST_TERMINATED,
    CONTAINER_COUNT,
    NODE_COUNT,
    API_SERVER_COUNT,
    NODE_GPU_TOTAL,
    NODE_GPU_AVAILABLE,
    NODE_GPU_RESERVED,
    ERROR_LOG,
    HEALTHZ_LATENCY,
    LIST_PODS_LATENCY,
    LIST_NODES_LATENCY,
    OBJECTS_TIMESTAMP,
)
ERROR_TYPES = ("parse", "unknown_pod_cond", "unknown_node_cond", "healthz", "unexpected_container_state", "api")
"""``process_error_log_total`` types: the original five plus ``api`` (a failed list request)."""

_BASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0)


def gauge(spec: MetricSpec) -> GaugeMetricFamily:
    family = spec.family()
    if not isinstance(family, GaugeMetricFamily):
        raise TypeError(f"{spec.name} is not a gauge")
    return family


def counter(spec: MetricSpec) -> CounterMetricFamily:
    family = spec.family()
    if not isinstance(family, CounterMetricFamily):
        raise TypeError(f"{spec.name} is not a counter")
    return family


def histogram(spec: MetricSpec) -> HistogramMetricFamily:
    family = spec.family()
    if not isinstance(family, HistogramMetricFamily):
        raise TypeError(f"{spec.name} is not a histogram")
    return family


def latency_buckets(request_timeout: float) -> tuple[float, ...]:
    """Bucket bounds up to the request timeout (the slowest a request can be), which is itself a bound."""
    return tuple(sorted({b for b in _BASE_BUCKETS if b < request_timeout} | {request_timeout}))


class CumulativeHistogram:
    """A histogram kept across collections and emitted as a family (the runtime rebuilds families each time)."""

    def __init__(self, spec: MetricSpec, bounds: tuple[float, ...]) -> None:
        self.spec = spec
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self._sum += seconds

    @property
    def count(self) -> int:
        return sum(self._counts)

    def family(self) -> Metric:
        family = histogram(self.spec)
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += count
            buckets.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
        family.add_metric([], buckets, self._sum)
        return family


def _sample(spec: MetricSpec, values: list[str], value: float = 1) -> Sample:
    return Sample(spec.name, dict(zip(spec.labels, values, strict=True)), value)


def pod_samples(pod: PodView) -> tuple[Sample, ...]:
    """The samples one pod contributes: its ``pai_pod_count`` and containers, or its ``pai_job_pod_count`` and its
    containers' status and restarts."""
    if pod.service_name is not None:
        return (
            _sample(
                POD_COUNT,
                [
                    pod.service_name,
                    pod.name,
                    pod.namespace,
                    pod.phase,
                    pod.host_ip,
                    pod.node_name,
                    pod.initialized,
                    pod.pod_scheduled,
                    pod.ready,
                ],
            ),
            *(
                _sample(
                    CONTAINER_COUNT,
                    [
                        pod.service_name,
                        pod.name,
                        c.name,
                        pod.namespace,
                        c.state,
                        pod.host_ip,
                        pod.node_name,
                        _bool(c.ready),
                    ],
                )
                for c in pod.containers
            ),
        )
    if pod.job_name is not None:
        return (
            _sample(
                JOB_POD_COUNT,
                [
                    pod.job_name,
                    pod.name,
                    pod.phase,
                    pod.host_ip,
                    pod.node_name,
                    pod.initialized,
                    _bool(pod.bound),
                    pod.pod_scheduled,
                    pod.ready,
                    pod.username,
                    pod.reason,
                ],
            ),
            *_job_container_samples(pod, pod.job_name),
        )
    return ()


def _job_container_samples(pod: PodView, job_name: str) -> Iterator[Sample]:
    """What is wrong with the containers of a job pod, and nothing for a healthy one.

    ``pai_job_container_status`` while a container is unhealthy (:func:`container_is_unhealthy`, the test the
    journal uses), ``pai_job_container_restarts_total`` once it has restarted, and
    ``pai_job_container_last_terminated_timestamp_seconds`` while it has a previous run. At 150,000 pods one
    series per healthy container would be some 300,000 series that say nothing.
    """
    for c in pod.containers:
        owner = [job_name, pod.username, pod.name, c.name, pod.namespace, pod.node_name]
        if container_is_unhealthy(pod, c):
            yield _sample(JOB_CONTAINER_STATUS, [*owner, c.state, c.reason, _code(c.exit_code)])
        if c.restarts:
            yield _sample(JOB_CONTAINER_RESTARTS, owner, c.restarts)
        if c.last_finished is not None:
            yield _sample(
                JOB_CONTAINER_LAST_TERMINATED, [*owner, c.last_reason, _code(c.last_exit_code)], c.last_finished
            )


def node_samples(node: NodeView) -> tuple[Sample, ...]:
    """The ``pai_node_count`` sample of a node (its GPU series depend on the pods: :meth:`ObjectFamilies.add_node`)."""
    return (
        _sample(
            NODE_COUNT,
            [
                node.host_ip,
                node.name,
                node.disk_pressure,
                node.memory_pressure,
                node.pid_pressure,
                node.network_unavailable,
                node.ready,
                _bool(node.unschedulable),
            ],
        ),
    )


class ObjectFamilies:
    """The pod, container, node and GPU families of one collection, filled one object at a time.

    Samples built once (the watch cache keeps each object's samples while it does not change) are added as they
    are, so a collection from the cache does not rebuild 150,000 label sets.
    """

    def __init__(self) -> None:
        self.pods = gauge(POD_COUNT)
        self.job_pods = gauge(JOB_POD_COUNT)
        self.job_containers = gauge(JOB_CONTAINER_STATUS)
        self.job_restarts = counter(JOB_CONTAINER_RESTARTS)
        self.job_last_terminated = gauge(JOB_CONTAINER_LAST_TERMINATED)
        self.containers = gauge(CONTAINER_COUNT)
        self.nodes = gauge(NODE_COUNT)
        self.gpu_total = gauge(NODE_GPU_TOTAL)
        self.gpu_available = gauge(NODE_GPU_AVAILABLE)
        self.gpu_reserved = gauge(NODE_GPU_RESERVED)
        self._by_name = {
            spec.name: family.samples
            for spec, family in (
                (POD_COUNT, self.pods),
                (JOB_POD_COUNT, self.job_pods),
                (JOB_CONTAINER_STATUS, self.job_containers),
                (JOB_CONTAINER_RESTARTS, self.job_restarts),
                (JOB_CONTAINER_LAST_TERMINATED, self.job_last_terminated),
                (CONTAINER_COUNT, self.containers),
                (NODE_COUNT, self.nodes),
            )
        }
        """Samples by sample name (a counter's samples end in ``_total``, as its spec's name does)."""

    def add_samples(self, samples: Iterable[Sample]) -> None:
        """Samples from :func:`pod_samples` or :func:`node_samples`, each to its family."""
        for sample in samples:
            self._by_name[sample.name].append(sample)

    def add_pod(self, pod: PodView) -> None:
        self.add_samples(pod_samples(pod))

    def add_node(self, node: NodeView, gpus_used: float) -> None:
        self.add_samples(node_samples(node))
        self.add_node_gpus(node, gpus_used)

    def add_node_gpus(self, node: NodeView, gpus_used: float) -> None:
        free = max(0.0, node.gpus - gpus_used)
        self.gpu_total.add_metric([node.host_ip], node.gpus)
        self.gpu_available.add_metric([node.host_ip], 0.0 if node.unschedulable else free)
        self.gpu_reserved.add_metric([node.host_ip], free if node.unschedulable else 0.0)

    def families(self) -> tuple[Metric, ...]:
        return (
            self.pods,
            self.job_pods,
            self.job_containers,
            self.job_restarts,
            self.job_last_terminated,
            self.containers,
            self.nodes,
            self.gpu_total,
            self.gpu_available,
            self.gpu_reserved,
        )


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _code(exit_code: int | None) -> str:
    return "" if exit_code is None else str(exit_code)


def api_server_family(error: str, url: str) -> Metric:
    """``k8s_api_server_count``: ``host_ip`` is the host of ``url`` (the original put the whole URL there)."""
    family = gauge(API_SERVER_COUNT)
    family.add_metric([error, urlsplit(url).hostname or url, url], 1)
    return family


def objects_timestamp_family(listed_at: float) -> Metric:
    family = gauge(OBJECTS_TIMESTAMP)
    family.add_metric([], listed_at)
    return family


def error_log_family(counts: dict[str, int]) -> Metric:
    family = counter(ERROR_LOG)
    for kind in ERROR_TYPES:
        family.add_metric([kind], counts.get(kind, 0))
    return family


def names(families: Iterable[Metric]) -> list[str]:
    """Family names, for logs and tests."""
    return [f.name for f in families]
