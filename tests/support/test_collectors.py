"""Collectors that misbehave on purpose, to test the runtime's isolation with real processes.

They are registered only by ``run_exporter.py``; the shipped daemons never see them, and they start disabled.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from prometheus_client.metrics_core import Metric

from pai_monitoring.runtime.collector import Collector, CollectorContext, CollectorOptions
from pai_monitoring.runtime.metrics import MetricSpec

STEADY = MetricSpec("pai_test_steady", "gauge", "Always 1 (test collector).")
HANG = MetricSpec("pai_test_hang", "gauge", "1 until the collector hangs (test collector).")
FAT = MetricSpec("pai_test_fat", "gauge", "Many series (test collector).", ("index", "padding"))


class SteadyCollector(Collector[CollectorOptions]):
    name: ClassVar[str] = "steady"
    default_enabled: ClassVar[bool] = False
    description: ClassVar[str] = "test: always succeeds"
    metrics: ClassVar[tuple[MetricSpec, ...]] = (STEADY,)

    def collect(self) -> Iterable[Metric]:
        fam = STEADY.gauge()
        fam.add_metric([], 1.0)
        return [fam]


@dataclass(frozen=True)
class HangOptions(CollectorOptions):
    hang_after: int = field(default=1, metadata={"help": "iterations that succeed before the collector hangs"})
    marker: Path | None = field(default=None, metadata={"help": "file created when the hang starts"})


class HangingCollector(Collector[HangOptions]):
    """Succeeds ``hang_after`` times, then blocks forever inside ``collect()``, like a hung driver call."""

    name: ClassVar[str] = "hang"
    default_enabled: ClassVar[bool] = False
    description: ClassVar[str] = "test: hangs forever"
    options_class: ClassVar[type[CollectorOptions]] = HangOptions
    metrics: ClassVar[tuple[MetricSpec, ...]] = (HANG,)

    def __init__(self, options: HangOptions, context: CollectorContext) -> None:
        super().__init__(options, context)
        self._done = 0

    def collect(self) -> Iterable[Metric]:
        if self._done >= self.options.hang_after:
            if self.options.marker is not None:
                self.options.marker.write_text(str(os.getpid()))
            threading.Event().wait()  # forever
        self._done += 1
        fam = HANG.gauge()
        fam.add_metric([], 1.0)
        return [fam]


class RaisingCollector(Collector[CollectorOptions]):
    name: ClassVar[str] = "boom"
    default_enabled: ClassVar[bool] = False
    description: ClassVar[str] = "test: always raises"
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()

    def collect(self) -> Iterable[Metric]:
        raise RuntimeError("simulated collector fault")


@dataclass(frozen=True)
class FatOptions(CollectorOptions):
    series: int = field(default=20000, metadata={"help": "number of series"})
    padding: int = field(default=40, metadata={"help": "length of each series' padding label"})


class FatCollector(Collector[FatOptions]):
    """A large exposition: a client that stops reading it holds its server thread (and request slot) in write."""

    name: ClassVar[str] = "fat"
    default_enabled: ClassVar[bool] = False
    description: ClassVar[str] = "test: a large exposition"
    options_class: ClassVar[type[CollectorOptions]] = FatOptions
    metrics: ClassVar[tuple[MetricSpec, ...]] = (FAT,)

    def collect(self) -> Iterable[Metric]:
        fam = FAT.gauge()
        padding = "x" * self.options.padding
        for i in range(self.options.series):
            fam.add_metric([str(i), padding], float(i))
        return [fam]


TEST_COLLECTORS = {
    "steady": "tests.support.test_collectors:SteadyCollector",
    "hang": "tests.support.test_collectors:HangingCollector",
    "boom": "tests.support.test_collectors:RaisingCollector",
    "fat": "tests.support.test_collectors:FatCollector",
}
