"""The collector interface every subsystem implements."""

from __future__ import annotations

import abc
import math
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from prometheus_client.metrics_core import Metric

from pai_monitoring.runtime.board import SharedState
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.metrics import MetricSpec

DEFAULT_INTERVAL_SECONDS = 30.0
DEFAULT_TIMEOUT_SECONDS = 20.0
SECONDS_BOUNDS: dict[str, tuple[float, float]] = {
    "interval": (0.1, 86_400.0),
    "timeout": (0.1, 3_600.0),
    "expiry": (0.1, 7 * 86_400.0),
}
"""Sane limits of the timing options: below 0.1 s a collector would spin, and beyond these a typo (``1e10``) would
overflow the timers or leave a collector silent for ever."""


@dataclass(frozen=True)
class CollectorOptions:
    """Options every collector has. Subclasses add their own fields, each with ``metadata={"help": ...}``.

    Every field becomes the flag ``--collector.<name>.<field-with-dashes>`` and the YAML key
    ``collectors.<name>.<field>``.
    """

    interval: float = field(
        default=DEFAULT_INTERVAL_SECONDS, metadata={"help": "Seconds between the starts of two collections."}
    )
    timeout: float = field(
        default=DEFAULT_TIMEOUT_SECONDS,
        metadata={"help": "Deadline of one collection in seconds; past it the collection counts as failed."},
    )
    expiry: float | None = field(
        default=None,
        metadata={
            "help": "Seconds after which an old snapshot is dropped instead of served; at least interval + timeout "
            "(default 2 x (interval + timeout): one failed collection does not blank the series)."
        },
    )

    @property
    def longest_cycle(self) -> float:
        """The longest two snapshots of a healthy collector lie apart: a collection starts at most ``interval`` after
        the previous one started, which is no earlier than the previous snapshot was taken, and it ends within
        ``timeout``."""
        return self.interval + self.timeout

    @property
    def effective_expiry(self) -> float:
        return self.expiry if self.expiry is not None else 2 * self.longest_cycle

    def validate(self) -> None:
        """Check the values; raise :class:`ConfigError` naming the option. Subclasses call ``super().validate()``."""
        for name, (low, high) in SECONDS_BOUNDS.items():
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and low <= value <= high):
                raise ConfigError(name, f"must be between {low:g} and {high:g} seconds, got {value:g}")
        if self.expiry is not None and self.expiry < self.longest_cycle:
            raise ConfigError(
                "expiry",
                f"{self.expiry:g}s is shorter than a collection cycle can take (interval + timeout = "
                f"{self.longest_cycle:g}s): the series of a healthy but slow collector would vanish between two "
                "collections",
            )


def default_node_name() -> str:
    return os.environ.get("NODE_NAME") or socket.gethostname()


@dataclass(frozen=True)
class CollectorContext:
    """What the runtime gives every collector: where the host's filesystems are and the shared board."""

    node_name: str = field(default_factory=default_node_name)
    proc_root: Path = Path("/proc")
    sys_root: Path = Path("/sys")
    rootfs: Path = Path("/")
    shared: SharedState = field(default_factory=SharedState)


OptionsT = TypeVar("OptionsT", bound=CollectorOptions)


class Collector(abc.ABC, Generic[OptionsT]):
    """One subsystem's collector. ``collect`` runs in the collector's own background thread."""

    name: ClassVar[str]
    description: ClassVar[str]
    metrics: ClassVar[tuple[MetricSpec, ...]]
    options_class: ClassVar[type[CollectorOptions]] = CollectorOptions
    default_enabled: ClassVar[bool] = True

    def __init__(self, options: OptionsT, context: CollectorContext) -> None:
        self.options = options
        self.context = context

    @abc.abstractmethod
    def collect(self) -> Iterable[Metric]:
        """Read the subsystem and yield fresh metric families. Raising marks this iteration failed."""

    def close(self) -> None:
        """Release workers, sockets and files. Called once at shutdown."""
