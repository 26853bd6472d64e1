"""The NVML worker never outlives the exporter, even while it is stuck inside a driver call."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.integration.gpu.conftest import REPO, Scenario, gpus
from tests.support.exporter import wait_for

pytestmark = pytest.mark.integration

PARENT = """
import sys, threading
from pai_monitoring.gpu.collector import GpuCollector, GpuOptions
from pai_monitoring.runtime.collector import CollectorContext
collector = GpuCollector(GpuOptions(timeout=600.0), CollectorContext(node_name="n"))
list(collector.collect())
print(collector.supervisor.pid, flush=True)
if sys.argv[1] == "hang":
    sys.stdin.readline()  # the test has made the next driver call block
    list(collector.collect())  # blocks inside the worker's driver call
threading.Event().wait()
"""


def in_driver_call(pid: int) -> bool:
    """The worker's main thread sleeps inside the simulated driver's blocked call (nanosleep or clock_nanosleep);
    waiting, it reads its requests (read) instead."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[0] in ("35", "230")
    except (OSError, IndexError):
        return False


def worker_gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("mode", ["idle", "hang"])
def test_the_worker_exits_when_the_exporter_is_killed(scenario: Scenario, mode: str) -> None:
    scenario.write(gpus(2))
    env = {**os.environ, "PYTHONPATH": str(REPO / "collectors")}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    worker = 0
    try:
        assert parent.stdout is not None
        assert parent.stdin is not None
        worker = int(parent.stdout.readline())
        if mode == "hang":
            scenario.append("block.nvmlDeviceGetCount_v2 = 600\n")
            parent.stdin.write("go\n")
            parent.stdin.flush()
            wait_for(lambda: in_driver_call(worker), timeout=60)
            assert not worker_gone(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        wait_for(lambda: worker_gone(worker), timeout=15)
    finally:
        if worker and not worker_gone(worker):  # the test failed: do not leave the worker behind
            os.kill(worker, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
        for stream in (parent.stdin, parent.stdout):
            if stream is not None:
                stream.close()
