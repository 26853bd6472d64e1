"""NVML calls made by the worker, counted and timed, with "not supported" turned into ``None`` where asked."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pynvml

from pai_monitoring.gpu.worker_log import log


class CallCounter:
    """Makes NVML calls, counting them and the time spent inside the library."""

    def __init__(self) -> None:
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.calls += 1
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def optional(self, fn: Callable[..., Any], *args: Any) -> Any:
        """The call's result, or ``None`` where the GPU does not support it. A lost GPU still raises."""
        try:
            return self(fn, *args)
        except pynvml.NVMLError_GpuIsLost:
            raise
        except pynvml.NVMLError as exc:
            log.debug("%s: %s", getattr(fn, "__name__", fn), exc)
            return None
