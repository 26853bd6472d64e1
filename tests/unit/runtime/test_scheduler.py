"""The runner: snapshots, expiry, deadlines, failures, in one process with short intervals."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from pai_monitoring.runtime.collector import CollectorOptions
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.runtime.scheduler import CollectorRunner
from pai_monitoring.runtime.shared import SharedKey, SharedState
from tests.support.exporter import wait_for

SPEC = MetricSpec("pai_test_value", "gauge", "test value")


class Scripted:
    """A collector whose next outcome the test sets: a value, an exception, or a block until released."""

    def __init__(self) -> None:
        self.outcome: object = 1.0
        self.release = threading.Event()

    def collect(self) -> Iterable[Metric]:
        if self.outcome == "block":
            self.release.wait()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        fam = SPEC.gauge()
        fam.add_metric([], float(self.outcome) if isinstance(self.outcome, float) else 0.0)
        return [fam]

    def close(self) -> None:
        self.release.set()


def runner(scripted: Scripted, **options: float) -> CollectorRunner:
    return CollectorRunner("t", CollectorOptions(**options), lambda: scripted)  # type: ignore[arg-type,return-value]


def test_success_then_failure_keeps_the_old_snapshot_until_it_expires() -> None:
    scripted = Scripted()
    # expiry leaves room for a busy machine between the two iterations; the expiry itself is awaited, not slept
    r = runner(scripted, interval=0.1, timeout=1.0, expiry=2.0)
    assert r.run_iteration()
    assert r.status().success
    scripted.outcome = RuntimeError("boom")
    assert not r.run_iteration()
    status = r.status()
    assert not status.success
    assert status.snapshot is not None  # still fresh: served
    assert status.last_error == "RuntimeError: boom"
    wait_for(lambda: r.status().snapshot is None)  # expired: dropped, not frozen


def test_an_iteration_past_its_deadline_counts_as_failed_and_is_discarded() -> None:
    scripted = Scripted()
    r = runner(scripted, interval=10, timeout=0.2)
    scripted.outcome = "block"
    thread = threading.Thread(target=r.run_iteration)
    thread.start()
    wait_for(lambda: r.status().stuck_for is not None)
    status = r.status()
    assert not status.success
    assert "past its 0.2s deadline" in (status.last_error or "")
    scripted.release.set()
    thread.join()
    assert r.status().snapshot is None
    assert "deadline exceeded" in (r.status().last_error or "")


def test_the_loop_runs_on_its_interval_and_stops() -> None:
    scripted = Scripted()
    r = runner(scripted, interval=0.05, timeout=1)
    r.start()
    wait_for(lambda: r.status().iterations >= 3)
    r.stop()
    count = r.status().iterations
    time.sleep(0.2)
    assert r.status().iterations == count


def test_a_collector_that_fails_to_construct_is_a_failing_collector() -> None:
    def factory() -> Scripted:
        raise OSError("no such device")

    r = CollectorRunner("t", CollectorOptions(), factory)  # type: ignore[arg-type]
    assert not r.run_iteration()
    assert r.status().last_error == "OSError: no such device"


def test_shared_state_expires() -> None:
    board = SharedState()
    key: SharedKey[int] = SharedKey("k")
    assert board.latest(key, 1.0) is None
    board.publish(key, 5)
    assert board.latest(key, 1.0) == 5
    time.sleep(0.05)
    assert board.latest(key, 0.01) is None
