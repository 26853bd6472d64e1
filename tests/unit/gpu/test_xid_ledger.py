"""Xid counts stay cumulative across NVML worker restarts, without double counting."""

from __future__ import annotations

from pai_monitoring.gpu.model import XidCount
from pai_monitoring.gpu.xid import XidLedger


def _counts(ledger: XidLedger) -> dict[tuple[str, int], int]:
    return {(x.minor_number, x.xid): x.count for x in ledger.totals()}


def test_repeated_snapshots_of_one_worker_do_not_add_up() -> None:
    ledger = XidLedger()
    ledger.update(1, [XidCount("0", 79, 1, 100.0)])
    ledger.update(1, [XidCount("0", 79, 1, 100.0)])
    assert _counts(ledger) == {("0", 79): 1}


def test_counts_reported_by_a_killed_worker_are_kept_after_restart() -> None:
    ledger = XidLedger()
    ledger.update(1, [XidCount("0", 79, 2, 100.0), XidCount("1", 48, 1, 90.0)])
    ledger.update(2, [])  # the new worker has seen nothing yet
    assert _counts(ledger) == {("0", 79): 2, ("1", 48): 1}
    ledger.update(2, [XidCount("0", 79, 1, 200.0)])
    assert _counts(ledger) == {("0", 79): 3, ("1", 48): 1}
    last_seen = {(x.minor_number, x.xid): x.last_seen for x in ledger.totals()}
    assert last_seen[("0", 79)] == 200.0
    assert last_seen[("1", 48)] == 90.0


def test_several_restarts_accumulate() -> None:
    ledger = XidLedger()
    for generation in range(1, 6):
        ledger.update(generation, [XidCount("3", 13, 1, float(generation))])
    assert _counts(ledger) == {("3", 13): 5}
