"""The runner: snapshots, expiry, deadlines, failures, in one process with short intervals."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import pytest
from prometheus_client.metrics_core import Metric

from pai_monitoring.runtime.board import SharedKey, SharedState
from pai_monitoring.runtime.collector import CollectorOptions
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.runtime.scheduler import CollectorRunner, next_start_after
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
    r = runner(scripted, interval=0.1, timeout=1.0, expiry=2.5)
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


def test_on_schedule_the_next_collection_starts_one_interval_after_the_last_start() -> None:
    assert next_start_after(started=100.0, now=104.0, interval=30.0) == 130.0


def test_after_an_overrun_the_next_collection_starts_at_once() -> None:
    # a collection planned at 100 took 45 s of a 30 s interval: the next starts at 145, not at 175
    assert next_start_after(started=100.0, now=145.0, interval=30.0) == 145.0
    assert next_start_after(started=145.0, now=190.0, interval=30.0) == 190.0


def test_a_slow_collection_is_never_older_than_interval_plus_timeout() -> None:
    """Simulated cycles of 1.5 intervals: the gap between two snapshots stays within the shortest allowed expiry."""
    options = CollectorOptions(interval=30.0, timeout=50.0)
    planned, gaps, last_snapshot = 0.0, [], None
    for duration in (45.0, 1.0, 45.0, 50.0, 2.0, 45.0):
        end = planned + duration
        if last_snapshot is not None:
            gaps.append(end - last_snapshot)
        last_snapshot = end
        planned = next_start_after(planned, end, options.interval)
    assert max(gaps) <= options.longest_cycle


def test_the_default_expiry_outlasts_one_failed_collection() -> None:
    options = CollectorOptions(interval=30.0, timeout=20.0)
    assert options.effective_expiry == 100.0
    # a failure within its deadline, then a slow success: interval + max(interval, timeout) + timeout at most
    assert options.effective_expiry >= 30.0 + 30.0 + 20.0


@pytest.mark.parametrize(("interval", "timeout", "expiry"), [(30.0, 20.0, 49.0), (5.0, 60.0, 60.0), (1.0, 1.0, 1.5)])
def test_an_expiry_shorter_than_a_cycle_is_rejected(interval: float, timeout: float, expiry: float) -> None:
    with pytest.raises(ConfigError, match=r"shorter than a collection cycle can take \(interval \+ timeout"):
        CollectorOptions(interval=interval, timeout=timeout, expiry=expiry).validate()


def test_an_expiry_of_exactly_one_cycle_is_accepted() -> None:
    CollectorOptions(interval=30.0, timeout=20.0, expiry=50.0).validate()
