"""Prometheus text exposition of metric families: the one rendering function the runtime uses.

It sits below both the scheduler (which renders each snapshot once, in the collector's thread) and the exposition
(which adds the runtime's own families), so that neither has to import the other.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector as PromCollector


class _Families(PromCollector):
    """A fixed list of families, so that ``generate_latest`` can render them."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render_families(families: Iterable[Metric]) -> bytes:
    """The text exposition of some families."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)
