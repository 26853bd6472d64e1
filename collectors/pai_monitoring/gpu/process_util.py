"""Per-process SM and memory utilisation, inside the NVML worker.

The driver keeps a short history of utilisation samples per process; a call returns those newer than a timestamp.
Each collection asks for the samples since the newest one the previous collection saw and reports, per process, the
mean of them: the process's utilisation over the collector's interval. ``nvmlDeviceGetProcessesUtilizationInfo``
(drivers from R550) is used where it exists, ``nvmlDeviceGetProcessUtilization`` otherwise. Neither works in MIG mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import pynvml

from pai_monitoring.gpu.calls import CallCounter
from pai_monitoring.gpu.worker_log import log


class Utilization(NamedTuple):
    sm_percent: float
    memory_percent: float


def mean_by_pid(samples: Iterable[Any]) -> tuple[dict[int, Utilization], int]:
    """Mean SM and memory utilisation per PID, and the newest sample's timestamp (0 when there is none)."""
    sums: dict[int, tuple[float, float, int]] = {}
    newest = 0
    for sample in samples:
        pid = int(sample.pid)
        sm, mem, n = sums.get(pid, (0.0, 0.0, 0))
        sums[pid] = (sm + float(sample.smUtil), mem + float(sample.memUtil), n + 1)
        newest = max(newest, int(sample.timeStamp))
    return {pid: Utilization(sm / n, mem / n) for pid, (sm, mem, n) in sums.items()}, newest


class ProcessUtilReader:
    """Remembers, per GPU, the newest sample seen, so that each collection reads only newer ones."""

    def __init__(self) -> None:
        self._last_seen: dict[int, int] = {}
        self._use_info_call = True

    def _samples(self, call: CallCounter, handle: Any, since: int) -> list[Any]:
        if self._use_info_call:
            try:
                return list(call(pynvml.nvmlDeviceGetProcessesUtilizationInfo, handle, since))
            except (pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_ArgumentVersionMismatch):
                log.info("nvmlDeviceGetProcessesUtilizationInfo not available; using nvmlDeviceGetProcessUtilization")
                self._use_info_call = False
        return list(call(pynvml.nvmlDeviceGetProcessUtilization, handle, since))

    def read(self, call: CallCounter, index: int, handle: Any) -> dict[int, Utilization] | None:
        """Utilisation per PID since the previous collection; ``{}`` when no process ran, ``None`` when unknown."""
        since = self._last_seen.get(index, 0)
        samples: list[Any] = []
        for attempt in (1, 2):
            try:
                samples = self._samples(call, handle, since)
                break
            except pynvml.NVMLError_NotFound:
                return {}  # no sample newer than the last one seen: nothing ran
            except pynvml.NVMLError_InsufficientSize:
                if attempt == 2:  # new samples arrived between the driver's two answers, twice
                    return None
            except pynvml.NVMLError_GpuIsLost:
                raise
            except pynvml.NVMLError as exc:
                log.debug("per-process utilisation: %s", exc)
                return None
        by_pid, newest = mean_by_pid(samples)
        if newest:
            self._last_seen[index] = max(since, newest)
        return by_pid
