"""Xid counts that survive worker restarts.

Each worker counts the Xid events it receives from the moment it registered for them, and every snapshot carries
its cumulative totals. The exporter keeps, per (minor number, Xid), a base (the last totals reported by workers that
are gone) plus the latest totals of the current worker. So a restart neither counts an event twice (a new worker
starts from zero and NVML never re-delivers an old event to a new event set) nor forgets counts already reported.

What a restart can lose: events the killed worker received after its last successful snapshot, and events that
happen while no worker is registered (between the kill and the next worker's first snapshot). NVML keeps no history
of Xid events to catch up from; the kernel log (``NVRM: Xid``) still has them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pai_monitoring.gpu.model import XidCount

XidKey = tuple[str, int]


@dataclass
class _Tally:
    count: int
    last_seen: float


class XidLedger:
    """Cumulative Xid counts across NVML worker generations."""

    def __init__(self) -> None:
        self._base: dict[XidKey, _Tally] = {}
        self._current: dict[XidKey, _Tally] = {}
        self._generation: int | None = None

    def update(self, generation: int, totals: Iterable[XidCount]) -> None:
        """Record the cumulative totals of worker ``generation`` from its latest snapshot."""
        if generation != self._generation:
            for key, tally in self._current.items():
                base = self._base.setdefault(key, _Tally(0, 0.0))
                base.count += tally.count
                base.last_seen = max(base.last_seen, tally.last_seen)
            self._current = {}
            self._generation = generation
        self._current = {(t.minor_number, t.xid): _Tally(t.count, t.last_seen) for t in totals}

    def totals(self) -> list[XidCount]:
        """Counts since the exporter started, sorted by minor number and Xid."""
        merged: dict[XidKey, _Tally] = {k: _Tally(v.count, v.last_seen) for k, v in self._base.items()}
        for key, tally in self._current.items():
            entry = merged.setdefault(key, _Tally(0, 0.0))
            entry.count += tally.count
            entry.last_seen = max(entry.last_seen, tally.last_seen)
        return [XidCount(minor, xid, t.count, t.last_seen) for (minor, xid), t in sorted(merged.items())]
