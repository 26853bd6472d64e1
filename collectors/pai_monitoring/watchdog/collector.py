"""The ``kubernetes`` collector of ``pai-watchdog``: cluster health from the API server, as OpenPAI's watchdog did.

One collection: re-read the token, check ``/readyz`` (or ``/healthz``), list all pods then all nodes page by page,
reduce each object to a small record as it arrives, and build the families. It runs in the runtime's background
thread and scrapes read the last snapshot, so a slow API server never holds up ``/metrics`` (the original held one
lock across the API calls and the scrape).

When the API server fails, the collection still succeeds with what it knows: ``k8s_api_server_count`` carries the
reason, ``process_error_log_total`` counts it, and the pod and node series of the last good collection are served
until they are ``expiry`` old, then dropped. It recovers by itself on the next collection that works.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

from prometheus_client.metrics_core import Metric

from pai_monitoring.runtime.collector import Collector, CollectorContext, CollectorOptions
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.watchdog import errors, metrics
from pai_monitoring.watchdog.client import KubeApi
from pai_monitoring.watchdog.errors import ApiFailure
from pai_monitoring.watchdog.model import Problems, read_node, read_pod
from pai_monitoring.watchdog.options import KubernetesOptions
from pai_monitoring.watchdog.report import UnhealthyReport, kv

log = logging.getLogger("pai_monitoring.watchdog")

DEADLINE_SHARE = 0.9
"""Share of the collection timeout the API calls may use; the rest is for building the families."""


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while lists are decoded.

    A page of 500 pods is some 50,000 new objects; each batch of 700 allocations triggers a collection that walks
    the young objects, and the old generations (the previous snapshot's samples) get walked again and again. That
    made decoding several times slower. The decoded pages hold no reference cycles, so reference counting frees
    them as before; only cycle detection waits until the collection ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class KubernetesCollector(Collector[KubernetesOptions]):
    name: ClassVar[str] = "kubernetes"
    description: ClassVar[str] = "Kubernetes pods, nodes, GPUs and API server health (the OpenPAI watchdog)"
    options_class: ClassVar[type[CollectorOptions]] = KubernetesOptions
    metrics: ClassVar[tuple[MetricSpec, ...]] = metrics.ALL

    def __init__(self, options: KubernetesOptions, context: CollectorContext) -> None:
        super().__init__(options, context)
        bounds = metrics.latency_buckets(options.request_timeout)
        self._latency = {
            "healthz": metrics.CumulativeHistogram(metrics.HEALTHZ_LATENCY, bounds),
            "pods": metrics.CumulativeHistogram(metrics.LIST_PODS_LATENCY, bounds),
            "nodes": metrics.CumulativeHistogram(metrics.LIST_NODES_LATENCY, bounds),
        }
        self._errors: dict[str, int] = dict.fromkeys(metrics.ERROR_TYPES, 0)
        self._last_good: tuple[float, tuple[Metric, ...]] | None = None
        self._last_reason = errors.OK
        self.clock: Callable[[], float] = time.monotonic
        self.api = KubeApi(options, self._observe)

    def _observe(self, kind: str, seconds: float) -> None:
        self._latency[kind].observe(seconds)

    def collect(self) -> Iterable[Metric]:
        start = self.clock()
        reason = errors.OK
        objects: tuple[Metric, ...] | None = None
        self.api.begin_collection(DEADLINE_SHARE * self.options.timeout)
        try:
            self.api.refresh_token()
            self.api.check_health()
        except ApiFailure as failure:
            reason = failure.reason
            self._errors["api" if failure.reason == errors.CREDENTIALS else "healthz"] += 1
            self._log_failure(failure)
        if reason == errors.OK:
            try:
                with _cyclic_gc_paused():
                    objects = self._collect_objects(start + DEADLINE_SHARE * self.options.timeout)
            except ApiFailure as failure:
                reason = failure.reason
                self._errors["parse" if failure.reason == errors.MALFORMED else "api"] += 1
                self._log_failure(failure)
        if reason == errors.OK and self._last_reason != errors.OK:
            log.warning("api_recovered %s", kv([("host", self.api.host), ("previous_error", self._last_reason)]))
        self._last_reason = reason
        if objects is not None:
            self._last_good = (start, objects)
        elif self._last_good is not None and start - self._last_good[0] > self.options.effective_expiry:
            log.warning("stale_objects_dropped %s", kv([("age_seconds", round(start - self._last_good[0], 1))]))
            self._last_good = None
        families: list[Metric] = [
            metrics.api_server_family(reason, self.api.host),
            metrics.error_log_family(self._errors),
            *(histogram.family() for histogram in self._latency.values()),
        ]
        if self._last_good is not None:
            families.extend(self._last_good[1])
        return families

    def _log_failure(self, failure: ApiFailure) -> None:
        log.warning(
            "api_error %s",
            kv(
                [("host", self.api.host), ("call", failure.what), ("error", failure.reason), ("detail", failure.detail)]
            ),
        )

    def _check_deadline(self, deadline: float, kind: str, seen: int) -> None:
        if self.clock() > deadline:
            raise ApiFailure(errors.TIMEOUT, kind, f"collection deadline passed after {seen} {kind}")

    def _collect_objects(self, deadline: float) -> tuple[Metric, ...]:
        options = self.options
        problems = Problems()
        report = UnhealthyReport(options.log_limit)
        families = metrics.ObjectFamilies()
        gpus_used: defaultdict[str, float] = defaultdict(float)
        pods = nodes = 0
        try:
            for page in self.api.list_pages("pods"):
                for raw in page:
                    pod = read_pod(raw, options.gpu_resources, options.service_label, options.job_label, problems)
                    if pod is None:
                        continue
                    pods += 1
                    families.add_pod(pod)
                    if pod.gpus and pod.holds_resources:
                        gpus_used[pod.node_name] += pod.gpus
                    report.pod(pod)
                self._check_deadline(deadline, "pods", pods)
            for page in self.api.list_pages("nodes"):
                for raw in page:
                    node = read_node(raw, options.gpu_resources, problems)
                    if node is None:
                        continue
                    nodes += 1
                    families.add_node(node, gpus_used.get(node.name, 0.0))
                    report.node(node)
                self._check_deadline(deadline, "nodes", nodes)
        finally:
            self._count_problems(problems)
        suppressed = report.suppressed()
        log.info(
            "collection %s",
            kv(
                [
                    ("pods", pods),
                    ("nodes", nodes),
                    ("unhealthy_pods", report.counts["pods"]),
                    ("unhealthy_containers", report.counts["containers"]),
                    ("unhealthy_nodes", report.counts["nodes"]),
                    ("not_logged", sum(suppressed.values())),
                    ("seconds", round(self.clock() - (deadline - DEADLINE_SHARE * options.timeout), 3)),
                ]
            ),
        )
        if any(suppressed.values()):
            log.warning(
                "unhealthy_not_logged %s (raise --collector.kubernetes.log-limit to see them)",
                kv(sorted(suppressed.items())),
            )
        return families.families()

    def _count_problems(self, problems: Problems) -> None:
        for kind in ("parse", "unknown_pod_cond", "unknown_node_cond", "unexpected_container_state"):
            count = getattr(problems, kind)
            if count:
                self._errors[kind] += count
                log.warning("%s %s", kind, kv([("count", count), ("first", problems.examples.get(kind, ""))]))

    def close(self) -> None:
        self.api.close()
