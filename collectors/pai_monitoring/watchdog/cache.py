"""Pods and nodes as the watchdog keeps them between collections, and one collection's families built from them.

Each object is read once when it arrives or changes (:func:`pod_entry`, :func:`node_entry`): its small record, the
samples it contributes, and what could not be read in it. With the watch cache (:class:`ObjectCache`) a collection
only walks the entries: it adds their ready-made samples, sums GPUs per node, logs the unhealthy and counts the
problems, so its cost no longer includes fetching, decoding and reading 150,000 pods. Without it (``watch`` off)
a collection makes the same entries from the list pages as they arrive and drops them after use.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from pai_monitoring.watchdog import errors, metrics
from pai_monitoring.watchdog.errors import ApiFailure
from pai_monitoring.watchdog.informer import Informer, WatchApi, WatchBounds
from pai_monitoring.watchdog.model import NodeView, PodView, Problems, read_node, read_pod
from pai_monitoring.watchdog.options import KubernetesOptions
from pai_monitoring.watchdog.report import UnhealthyReport

PROBLEM_KINDS = ("parse", "unknown_pod_cond", "unknown_node_cond", "unexpected_container_state")

Notes = tuple[tuple[str, int, str], ...]
"""Problems met reading one object: (kind, count, first example)."""


def _notes(problems: Problems) -> Notes:
    return tuple(
        (kind, getattr(problems, kind), problems.examples.get(kind, ""))
        for kind in PROBLEM_KINDS
        if getattr(problems, kind)
    )


@dataclass(frozen=True, slots=True)
class PodEntry:
    view: PodView | None
    """``None`` when the object is not a readable pod (counted as a ``parse`` problem)."""
    samples: tuple[Sample, ...]
    notes: Notes


@dataclass(frozen=True, slots=True)
class NodeEntry:
    view: NodeView | None
    samples: tuple[Sample, ...]
    notes: Notes


def pod_entry(raw: Any, options: KubernetesOptions) -> PodEntry:
    problems = Problems()
    view = read_pod(raw, options.gpu_resources, options.service_label, options.job_label, problems, options.user_label)
    return PodEntry(view, metrics.pod_samples(view) if view is not None else (), _notes(problems))


def node_entry(raw: Any, options: KubernetesOptions) -> NodeEntry:
    problems = Problems()
    view = read_node(raw, options.gpu_resources, problems)
    return NodeEntry(view, metrics.node_samples(view) if view is not None else (), _notes(problems))


class Collection:
    """One collection's families, filled entry by entry: all pods first, then the nodes (which need the pods' GPUs)."""

    def __init__(self, log_limit: int) -> None:
        self.families = metrics.ObjectFamilies()
        self.report = UnhealthyReport(log_limit)
        self.problems = Problems()
        self.pods = 0
        self.nodes = 0
        self._gpus_used: defaultdict[str, float] = defaultdict(float)

    def _count(self, notes: Notes) -> None:
        for kind, count, example in notes:
            setattr(self.problems, kind, getattr(self.problems, kind) + count)
            self.problems.examples.setdefault(kind, example)

    def add_pod(self, entry: PodEntry) -> None:
        self._count(entry.notes)
        pod = entry.view
        if pod is None:
            return
        self.pods += 1
        self.families.add_samples(entry.samples)
        if pod.gpus and pod.holds_resources:
            self._gpus_used[pod.node_name] += pod.gpus
        self.report.pod(pod)

    def add_node(self, entry: NodeEntry) -> None:
        self._count(entry.notes)
        node = entry.view
        if node is None:
            return
        self.nodes += 1
        self.families.add_samples(entry.samples)
        self.families.add_node_gpus(node, self._gpus_used.get(node.name, 0.0))
        self.report.node(node)

    def add_unreadable(self, count: int, kind: str) -> None:
        """Objects the cache could not keep (no name): ``parse`` problems, as the list counts them."""
        if count:
            self._count((("parse", count, f"{kind}: an object without metadata.name"),))

    def result(self) -> tuple[Metric, ...]:
        return self.families.families()


class ObjectCache:
    """The watch cache: an informer for pods and one for nodes, started by the first collection that reads them."""

    def __init__(self, api: WatchApi, options: KubernetesOptions) -> None:
        bounds = WatchBounds(
            timeout=options.watch_timeout,
            idle_timeout=options.watch_idle_timeout,
            max_event_bytes=options.watch_max_event_bytes,
            max_objects=options.cache_max_objects,
        )
        self.pods: Informer[PodEntry] = Informer(api, "pods", lambda raw: pod_entry(raw, options), bounds)
        self.nodes: Informer[NodeEntry] = Informer(api, "nodes", lambda raw: node_entry(raw, options), bounds)

    def read(self, collection: Collection, deadline: float, clock: Callable[[], float]) -> None:
        """Fill ``collection`` from the cache; raise the failure of an informer that is not current.

        The first call starts the informers and waits for their first list until ``deadline`` (a ``timeout``
        failure if it is not done by then; the list goes on in the background for the next collection). An
        informer that is failing gets one more attempt at once, and the collection reports its outcome.
        """
        informers: Sequence[Informer[Any]] = (self.pods, self.nodes)
        for informer in informers:
            informer.start()
        for informer in informers:
            informer.retry_now(deadline - clock())
            if not informer.wait_synced(deadline - clock()):
                failure = informer.state().failure
                if failure is not None:
                    raise failure
                raise ApiFailure(errors.TIMEOUT, informer.kind, f"the first list of {informer.kind} is not done yet")
            failure = informer.state().failure
            if failure is not None:
                raise failure
        for pod in self.pods.values():
            collection.add_pod(pod)
        for node in self.nodes.values():
            collection.add_node(node)
        collection.add_unreadable(self.pods.state().unkeyed, "pods")
        collection.add_unreadable(self.nodes.state().unkeyed, "nodes")

    def close(self) -> None:
        self.pods.stop()
        self.nodes.stop()
