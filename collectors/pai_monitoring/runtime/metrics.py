"""Metric specifications: the one place a metric's name, type, help and labels are written down.

Collectors build their families from these specs, and ``docs/metrics.md`` is generated from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

MetricType = Literal["gauge", "counter", "histogram"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class MetricSpec:
    """A metric family a collector can emit."""

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        bad = [label for label in self.labels if not _LABEL.match(label) or label.startswith("__")]
        if bad:
            raise ValueError(f"invalid label names {bad} on {self.name}")
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name} must end in _total")
        if not self.help.strip():
            raise ValueError(f"{self.name} has no help text")

    def family(self) -> Any:
        """A new, empty family of this metric's type, ready for ``add_metric``."""
        return {"gauge": self.gauge, "counter": self.counter, "histogram": self.histogram}[self.type]()

    def _check(self, expected: MetricType) -> list[str]:
        if self.type != expected:
            raise TypeError(f"{self.name} is a {self.type}, not a {expected}")
        return list(self.labels)

    def gauge(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.help, labels=self._check("gauge"))

    def counter(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.help, labels=self._check("counter"))

    def histogram(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.help, labels=self._check("histogram"))
