"""Runs each collector in its own background thread, on its own interval, and keeps its latest snapshot.

A scrape never waits for a collector. It reads, for every collector, the snapshot of its last successful
iteration, unless that snapshot is older than the collector's expiry, in which case the collector's series are
left out instead of being served frozen. A collection that overruns its interval is followed at once, so a healthy
but slow collector's snapshot is never older than interval + timeout, which the expiry may not undercut. A collector
stuck inside ``collect()`` keeps its one thread busy: no new iteration starts until it returns (so a hang never
piles up threads), its iteration counter stops moving, and its success metric reads 0 once the deadline has passed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric

from pai_monitoring.runtime.collector import Collector, CollectorOptions
from pai_monitoring.runtime.textformat import render_families

log = logging.getLogger(__name__)


def next_start_after(started: float, now: float, interval: float) -> float:
    """When the collection after the one planned at ``started`` begins, seen at ``now`` when that one ended.

    On schedule it starts ``interval`` after the previous start. A collection that overran its interval is followed
    at once, and the schedule goes on from there: waiting a further interval would leave the snapshot older than a
    healthy cycle takes (``CollectorOptions.longest_cycle``), and its series would expire although nothing failed.
    """
    planned = started + interval
    return planned if planned > now else now


@dataclass(frozen=True)
class RenderedSnapshot:
    """A collector's families from its last successful iteration, with their text exposition."""

    families: tuple[Metric, ...]
    rendered: bytes
    """The families in the text exposition format, rendered once in the collector's thread."""
    taken_monotonic: float
    taken_wall: float


@dataclass(frozen=True)
class RunnerStatus:
    """What one collector looks like right now, for the self-metrics and the landing page."""

    name: str
    iterations: int
    success: bool
    duration_seconds: float | None
    last_success_wall: float | None
    last_error: str | None
    snapshot: RenderedSnapshot | None
    stuck_for: float | None
    """Seconds the current iteration has been running past its deadline, else ``None``."""


class CollectorRunner:
    """Owns one collector: its thread, its latest snapshot and its health."""

    def __init__(
        self,
        name: str,
        options: CollectorOptions,
        factory: Callable[[], Collector[Any]],
        on_update: Callable[[], None] | None = None,
        render: Callable[[Iterable[Metric]], bytes] | None = None,
    ) -> None:
        self.name = name
        self.options = options
        self._factory = factory
        self._collector: Collector[Any] | None = None
        self._on_update = on_update
        self._render = render or render_families
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._iterations = 0
        self._snapshot: RenderedSnapshot | None = None
        self._last_ok = False
        self._last_duration: float | None = None
        self._last_success_wall: float | None = None
        self._last_error: str | None = None
        self._started_at: float | None = None  # monotonic start of the iteration in progress

    def set_listener(self, on_update: Callable[[], None]) -> None:
        """Call ``on_update`` after every successful iteration (the textfile writer listens). Set before start."""
        self._on_update = on_update

    def _ensure_collector(self) -> Collector[Any]:
        if self._collector is None:
            self._collector = self._factory()
        return self._collector

    def run_iteration(self) -> bool:
        """One collection in the calling thread; records the outcome. True when it succeeded in time."""
        start = time.monotonic()
        with self._lock:
            self._iterations += 1
            self._started_at = start
        error: str | None = None
        families: tuple[Metric, ...] = ()
        rendered = b""
        try:
            families = tuple(self._ensure_collector().collect())
            rendered = self._render(families)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("collector=%s iteration failed: %s", self.name, error, exc_info=log.isEnabledFor(logging.DEBUG))
        end = time.monotonic()
        duration = end - start
        if error is None and duration > self.options.timeout:
            error = f"deadline exceeded: took {duration:.1f}s, timeout {self.options.timeout:g}s"
            log.warning("collector=%s %s; result discarded", self.name, error)
        with self._lock:
            self._started_at = None
            self._last_duration = duration
            self._last_ok = error is None
            self._last_error = error
            if error is None:
                self._snapshot = RenderedSnapshot(families, rendered, end, time.time())
                self._last_success_wall = self._snapshot.taken_wall
        if error is None and self._on_update is not None:
            self._on_update()
        return error is None

    def _loop(self) -> None:
        next_start = time.monotonic()
        while not self._stop.is_set():
            self.run_iteration()
            now = time.monotonic()
            next_start = next_start_after(next_start, now, self.options.interval)
            self._stop.wait(next_start - now)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"collector-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, wait: float = 5.0) -> None:
        """Stop the loop and close the collector. A thread stuck inside ``collect()`` is left behind (daemon)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait)
            if self._thread.is_alive():
                log.warning("collector=%s still inside collect() at shutdown; abandoning it", self.name)
                return
        if self._collector is not None:
            try:
                self._collector.close()
            except Exception:
                log.exception("collector=%s close failed", self.name)

    def status(self) -> RunnerStatus:
        now = time.monotonic()
        with self._lock:
            snapshot = self._snapshot
            stuck_for: float | None = None
            if self._started_at is not None and now - self._started_at > self.options.timeout:
                stuck_for = now - self._started_at
            fresh = snapshot is not None and now - snapshot.taken_monotonic <= self.options.effective_expiry
            duration = self._last_duration
            if stuck_for is not None:
                duration = stuck_for
            error = self._last_error
            if stuck_for is not None:
                error = f"iteration running for {stuck_for:.1f}s, past its {self.options.timeout:g}s deadline"
            elif self._last_ok and not fresh:
                error = "snapshot expired"
            return RunnerStatus(
                name=self.name,
                iterations=self._iterations,
                success=self._last_ok and fresh and stuck_for is None,
                duration_seconds=duration,
                last_success_wall=self._last_success_wall,
                last_error=error,
                snapshot=snapshot if fresh else None,
                stuck_for=stuck_for,
            )
