"""Logging for the NVML worker process, to stderr (journald), without the ``logging`` module.

The worker is a second Python process per exporter; ``logging`` and what it pulls in would add about 0.7 MB to it.
Lines look like ``gpu-worker[1234] WARNING message``. The level comes from ``PAI_GPU_WORKER_LOG_LEVEL``
(default ``WARNING``).
"""

from __future__ import annotations

import os
import sys

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}


class WorkerLog:
    def __init__(self, level: str | None = None) -> None:
        name = (level or os.environ.get("PAI_GPU_WORKER_LOG_LEVEL") or "WARNING").upper()
        self.threshold = LEVELS.get(name, LEVELS["WARNING"])

    def _emit(self, level: str, message: str, args: tuple[object, ...]) -> None:
        if LEVELS[level] < self.threshold:
            return
        text = message % args if args else message
        sys.stderr.write(f"gpu-worker[{os.getpid()}] {level} {text}\n")
        sys.stderr.flush()

    def debug(self, message: str, *args: object) -> None:
        self._emit("DEBUG", message, args)

    def info(self, message: str, *args: object) -> None:
        self._emit("INFO", message, args)

    def warning(self, message: str, *args: object) -> None:
        self._emit("WARNING", message, args)

    def error(self, message: str, *args: object) -> None:
        self._emit("ERROR", message, args)


log = WorkerLog()
