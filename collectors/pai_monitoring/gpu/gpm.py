"""Profiling metrics through NVML GPM (GPU Performance Monitoring, Hopper and newer), inside the NVML worker.

GPM computes its metrics from two samples of a GPU's counters. A collection takes one sample per GPU (per GPU
instance in MIG mode) and asks for the metrics between it and the sample the previous collection took, so the
metrics cover the collector's interval and no collection ever waits for a second sample. The first collection of a
worker only takes the first sample (status ``first_sample``). NVML wants at least 100 ms between two samples; a
collection that comes sooner serves the previous window's figures again instead of a shorter window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import pynvml

from pai_monitoring.gpu.calls import CallCounter
from pai_monitoring.gpu.model import GpmReading, GpmStatus
from pai_monitoring.gpu.worker_log import log

MIN_WINDOW_SECONDS = 0.1

# The NVML metric each key of pai_monitoring.gpu.profiling.GPM_KEYS is read from.
METRIC_IDS: tuple[tuple[int, str], ...] = (
    (pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL, "graphics_engine"),
    (pynvml.NVML_GPM_METRIC_SM_UTIL, "sm"),
    (pynvml.NVML_GPM_METRIC_SM_OCCUPANCY, "sm_occupancy"),
    (pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL, "dram"),
    (pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL, "pipe_tensor"),
    (pynvml.NVML_GPM_METRIC_DFMA_TENSOR_UTIL, "pipe_tensor_dfma"),
    (pynvml.NVML_GPM_METRIC_DMMA_TENSOR_UTIL, "pipe_tensor_dmma"),
    (pynvml.NVML_GPM_METRIC_HMMA_TENSOR_UTIL, "pipe_tensor_hmma"),
    (pynvml.NVML_GPM_METRIC_IMMA_TENSOR_UTIL, "pipe_tensor_imma"),
    (pynvml.NVML_GPM_METRIC_FP64_UTIL, "pipe_fp64"),
    (pynvml.NVML_GPM_METRIC_FP32_UTIL, "pipe_fp32"),
    (pynvml.NVML_GPM_METRIC_FP16_UTIL, "pipe_fp16"),
    (pynvml.NVML_GPM_METRIC_INTEGER_UTIL, "pipe_integer"),
    (pynvml.NVML_GPM_METRIC_PCIE_TX_PER_SEC, "pcie_tx"),
    (pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC, "pcie_rx"),
    (pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC, "nvlink_tx"),
    (pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC, "nvlink_rx"),
)

SampleKey = tuple[int, int]
"""(GPU index, GPU instance id or -1 for the whole GPU)."""


class _Window(NamedTuple):
    sample: Any
    spare: Any
    taken_at: float
    reading: GpmReading


def metrics_between(call: CallCounter, first: Any, second: Any) -> GpmReading:
    """The metrics GPM computes between two samples (the earlier first); metrics the GPU does not offer are left out."""
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(METRIC_IDS)
    request.sample1 = first
    request.sample2 = second
    for slot, (metric, _) in enumerate(METRIC_IDS):
        request.metrics[slot].metricId = metric
    call(pynvml.nvmlGpmMetricsGet, request)
    values = tuple(
        (key, float(request.metrics[slot].value))
        for slot, (_, key) in enumerate(METRIC_IDS)
        if request.metrics[slot].nvmlReturn == pynvml.NVML_SUCCESS
    )
    return GpmReading("ok", values)


class GpmSampler:
    """The previous GPM sample of each GPU and GPU instance, and whether each GPU supports GPM at all."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._driver_has_gpm = True
        self._supported: dict[int, bool] = {}
        self._windows: dict[SampleKey, _Window] = {}
        self._touched: set[SampleKey] = set()

    def _support(self, call: CallCounter, index: int, handle: Any) -> GpmStatus | None:
        """``None`` when the GPU supports GPM, else the status that says why not."""
        if not self._driver_has_gpm:
            return "unsupported_driver"
        if index not in self._supported:
            try:
                support = call(pynvml.nvmlGpmQueryDeviceSupport, handle)
            except pynvml.NVMLError_FunctionNotFound:
                log.info("this NVML library has no GPM calls: no profiling metrics")
                self._driver_has_gpm = False
                return "unsupported_driver"
            except pynvml.NVMLError_GpuIsLost:
                raise
            except pynvml.NVMLError as exc:
                log.debug("nvmlGpmQueryDeviceSupport: %s", exc)
                return "error"
            self._supported[index] = bool(support.isSupportedDevice)
        return None if self._supported[index] else "unsupported_gpu"

    def read(
        self, call: CallCounter, index: int, handle: Any, mig_mode: bool | None, instances: Iterable[int]
    ) -> tuple[GpmReading, tuple[tuple[int, GpmReading], ...]]:
        """The whole GPU's reading, and one per GPU instance in MIG mode."""
        unsupported = self._support(call, index, handle)
        if unsupported is not None:
            return GpmReading(unsupported), ()
        if not mig_mode:
            return self._window(call, (index, -1), pynvml.nvmlGpmSampleGet, handle), ()
        per_instance = tuple(
            (gi, self._window(call, (index, gi), pynvml.nvmlGpmMigSampleGet, handle, gi))
            for gi in sorted(set(instances))
        )
        return GpmReading("mig_mode"), per_instance

    def _window(self, call: CallCounter, key: SampleKey, sample_get: Callable[..., Any], *args: Any) -> GpmReading:
        """The metrics since the previous sample of ``key``, taking a new one with ``sample_get(*args, sample)``."""
        self._touched.add(key)
        previous = self._windows.get(key)
        now = self._clock()
        if previous is not None and now - previous.taken_at < MIN_WINDOW_SECONDS:
            return previous.reading
        try:
            if previous is None:
                sample, spare = _alloc_pair(call)
            else:
                sample, spare = previous.spare, previous.sample
                del self._windows[key]
        except pynvml.NVMLError as exc:
            log.debug("GPM sample buffers: %s", exc)
            return GpmReading("error")
        try:
            call(sample_get, *args, sample)
        except pynvml.NVMLError as exc:
            _free(sample, spare)
            if isinstance(exc, pynvml.NVMLError_GpuIsLost):
                raise
            log.debug("GPM sample of %s: %s", key, exc)
            return GpmReading("unsupported_gpu" if isinstance(exc, pynvml.NVMLError_NotSupported) else "error")
        reading = GpmReading("first_sample")
        if previous is not None:
            try:
                reading = metrics_between(call, spare, sample)
            except pynvml.NVMLError_GpuIsLost:
                _free(sample, spare)
                raise
            except pynvml.NVMLError as exc:
                log.debug("GPM metrics of %s: %s", key, exc)
                reading = GpmReading("error")
        self._windows[key] = _Window(sample, spare, now, reading)
        return reading

    def _drop(self, key: SampleKey) -> None:
        window = self._windows.pop(key, None)
        if window is not None:
            _free(window.sample, window.spare)

    def end_cycle(self) -> None:
        """Free the samples of GPUs and GPU instances this collection did not see (gone, or MIG reconfigured)."""
        for key in [k for k in self._windows if k not in self._touched]:
            self._drop(key)
        self._touched.clear()

    def forget_device(self, index: int) -> None:
        """A GPU that was lost: ask again whether it supports GPM when it comes back."""
        self._supported.pop(index, None)

    def held(self) -> int:
        """How many GPUs and GPU instances have a previous sample."""
        return len(self._windows)

    def close(self) -> None:
        for key in list(self._windows):
            self._drop(key)


def _alloc_pair(call: CallCounter) -> tuple[Any, Any]:
    first = call(pynvml.nvmlGpmSampleAlloc)
    try:
        return first, call(pynvml.nvmlGpmSampleAlloc)
    except pynvml.NVMLError:
        _free(first)
        raise


def _free(*samples: Any) -> None:
    for sample in samples:
        try:
            pynvml.nvmlGpmSampleFree(sample)
        except pynvml.NVMLError as exc:
            log.debug("nvmlGpmSampleFree: %s", exc)
