"""A typed board where collectors leave their latest results for each other.

The original job-exporter passed data between collector threads through ``AtomicRef`` objects that expired; this is
the same idea with a type per key, so that ``latest(GPU_STATE, ...)`` is known to return a ``GpuState``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

T = TypeVar("T")


@dataclass(frozen=True)
class SharedKey(Generic[T]):
    """The name of a shared value; the type parameter says what is stored under it."""

    name: str


class SharedState:
    """Latest value per key, with the monotonic time it was published."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, object]] = {}

    def publish(self, key: SharedKey[T], value: T) -> None:
        with self._lock:
            self._values[key.name] = (time.monotonic(), value)

    def latest(self, key: SharedKey[T], max_age: float) -> T | None:
        """The value under ``key`` if it was published less than ``max_age`` seconds ago, else ``None``."""
        with self._lock:
            entry = self._values.get(key.name)
        if entry is None or time.monotonic() - entry[0] > max_age:
            return None
        return cast(T, entry[1])
