"""The worker supervisor with real child processes: a worker that will not die blocks the start of another."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator

import psutil
import pytest

from pai_monitoring.gpu.supervisor import WorkerFailed, WorkerSupervisor
from tests.support.exporter import wait_for

pytestmark = pytest.mark.integration

SILENT_WORKER = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.fixture
def unkillable() -> Iterator[WorkerSupervisor]:
    """A supervisor whose "kill" is SIGCONT: its workers survive being killed, like a process stuck in state D."""
    supervisor = WorkerSupervisor(command=SILENT_WORKER, kill_signal=signal.SIGCONT)
    yield supervisor
    for child in psutil.Process().children():
        if child.cmdline()[:2] == SILENT_WORKER[:2]:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
    supervisor.close()


def test_no_second_worker_while_the_killed_one_is_still_alive(unkillable: WorkerSupervisor) -> None:
    with pytest.raises(WorkerFailed, match="did not answer"):
        unkillable.request(0.3)
    stuck = unkillable.dying_pid
    assert stuck is not None
    for _ in range(3):
        with pytest.raises(WorkerFailed, match="still stuck"):
            unkillable.request(0.3)
    assert unkillable.spawned == 1
    assert [p.pid for p in psutil.Process().children()] == [stuck]

    os.kill(stuck, signal.SIGKILL)  # the driver finally lets go
    wait_for(lambda: psutil.Process(stuck).status() == psutil.STATUS_ZOMBIE)
    with pytest.raises(WorkerFailed, match="did not answer"):
        unkillable.request(0.3)
    assert unkillable.spawned == 2
    assert not psutil.pid_exists(stuck)  # reaped


def test_a_worker_that_dies_is_replaced_on_the_next_request() -> None:
    supervisor = WorkerSupervisor(command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    try:
        for _ in range(3):
            with pytest.raises(WorkerFailed):
                supervisor.request(5.0)
        assert psutil.Process().children() == []
        assert supervisor.restarts == 3
    finally:
        supervisor.close()
