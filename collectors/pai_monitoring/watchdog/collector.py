"""The ``kubernetes`` collector of ``pai-watchdog``: cluster health from the API server, as OpenPAI's watchdog did.

One collection: re-read the token, check ``/readyz`` (or ``/healthz``), then read all pods and all nodes and build
the families. By default they come from the watch cache (``cache.py``, ``informer.py``: one list, then watch
streams keep it current between collections); with ``watch`` off, every collection lists all pods then all nodes
page by page and reduces each object to a small record as it arrives. It runs in the runtime's background
thread and scrapes read the last snapshot, so a slow API server never holds up ``/metrics`` (the original held one
lock across the API calls and the scrape).

When the API server fails, the collection still succeeds with what it knows: ``k8s_api_server_count`` carries the
reason, ``process_error_log_total`` counts it, and the pod and node series of the last good collection are served as
the last known state, with ``pai_watchdog_objects_timestamp_seconds`` saying how old they are. A watchdog that cannot
see does not announce that all is well: dropping them would resolve every NodeNotReady. It recovers by itself on the
next collection that works.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

from prometheus_client.metrics_core import Metric

from pai_monitoring.runtime.collector import Collector, CollectorContext, CollectorOptions
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.watchdog import errors, metrics
from pai_monitoring.watchdog.cache import PROBLEM_KINDS, Collection, ObjectCache, node_entry, pod_entry
from pai_monitoring.watchdog.client import KubeApi
from pai_monitoring.watchdog.errors import ApiFailure
from pai_monitoring.watchdog.model import Problems
from pai_monitoring.watchdog.options import KubernetesOptions
from pai_monitoring.watchdog.report import kv

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
        """Unix time and families of the last collection that read every pod and node (listed, or cache current)."""
        self._last_reason = errors.OK
        self.clock: Callable[[], float] = time.monotonic
        self.wall_clock: Callable[[], float] = time.time
        self.api = KubeApi(options, self._observe)
        self.cache = ObjectCache(self.api, options) if options.watch else None
        """The watch cache (``watch`` on): pods and nodes kept current by watch streams between collections."""

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
            self._last_good = (self.wall_clock(), objects)
        elif self._last_good is not None:
            age = self.wall_clock() - self._last_good[0]
            log.warning("serving_last_known_objects %s", kv([("age_seconds", round(age, 1)), ("error", reason)]))
        families: list[Metric] = [
            metrics.api_server_family(reason, self.api.host),
            metrics.error_log_family(self._errors),
            *(histogram.family() for histogram in self._latency.values()),
        ]
        if self._last_good is not None:
            families.append(metrics.objects_timestamp_family(self._last_good[0]))
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
        collection = Collection(options.log_limit)
        try:
            if self.cache is not None:
                self.cache.read(collection, deadline, self.clock)
            else:
                self._list_objects(collection, deadline)
        finally:
            self._count_problems(collection.problems)
        report = collection.report
        suppressed = report.suppressed()
        log.info(
            "collection %s",
            kv(
                [
                    ("pods", collection.pods),
                    ("nodes", collection.nodes),
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
        return collection.result()

    def _list_objects(self, collection: Collection, deadline: float) -> None:
        """Without the watch cache: list every pod, then every node, and read each page as it arrives."""
        for page in self.api.list_pages("pods"):
            for raw in page:
                collection.add_pod(pod_entry(raw, self.options))
            self._check_deadline(deadline, "pods", collection.pods)
        for page in self.api.list_pages("nodes"):
            for raw in page:
                collection.add_node(node_entry(raw, self.options))
            self._check_deadline(deadline, "nodes", collection.nodes)

    def _count_problems(self, problems: Problems) -> None:
        for kind in PROBLEM_KINDS:
            count = getattr(problems, kind)
            if count:
                self._errors[kind] += count
                log.warning("%s %s", kind, kv([("count", count), ("first", problems.examples.get(kind, ""))]))

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self.api.close()
