"""Reads that can neither hang nor balloon: caps, special files, the environment scanner, abandoned reads."""

from __future__ import annotations

import os
import threading
import tracemalloc
from pathlib import Path

import pytest

from pai_monitoring.jobs.kernel import (
    CHUNK,
    LockedReads,
    NotNow,
    read_file,
    read_head,
    scan_environ,
)
from tests.fixtures.jobs.generate import Proc, stat_line


def test_a_file_longer_than_its_cap_is_unreadable_and_a_prefix_read_stops_at_the_cap(tmp_path: Path) -> None:
    big = tmp_path / "memory.stat"
    big.write_bytes(b"x" * 100)
    assert read_file(str(big), cap=100) == b"x" * 100
    assert read_file(str(big), cap=99) is None  # part of a statistics file would be a wrong figure
    assert read_head(str(big), 10) == b"x" * 10
    assert read_file(str(tmp_path / "absent")) is None


def test_a_fifo_where_a_kernel_file_should_be_neither_blocks_the_open_nor_the_read(tmp_path: Path) -> None:
    fifo = tmp_path / "cgroup.procs"
    os.mkfifo(fifo)  # a plain open() would wait for a writer forever
    assert read_file(str(fifo)) == b""
    assert read_head(str(fifo), 64) == b""
    assert scan_environ(str(fifo), {"PAI_JOB_NAME"}) == {}


def _environ(tmp_path: Path, items: list[bytes]) -> str:
    path = tmp_path / "environ"
    path.write_bytes(b"\0".join(items) + b"\0")
    return str(path)


def test_the_environment_scan_finds_keys_across_chunk_borders_and_skips_huge_entries(tmp_path: Path) -> None:
    filler = b"A=" + b"a" * (CHUNK - 10)  # puts the next key across the first chunk border
    huge = b"HUGE=" + b"h" * (3 * CHUNK)  # longer than a chunk: skipped without being held in memory
    path = _environ(tmp_path, [filler, b"PAI_JOB_NAME=across", huge, b"PAI_USER_NAME=after", b"NO_TRAILING=1"])
    assert scan_environ(path, {"PAI_JOB_NAME", "PAI_USER_NAME", "HUGE"}) == {
        "PAI_JOB_NAME": "across",
        "PAI_USER_NAME": "after",
    }


def test_the_environment_scan_reads_no_more_than_its_cap_and_keeps_only_a_chunk(tmp_path: Path) -> None:
    """The issue's case: a 50 MB environment cost 98 MB of memory when read whole (12 MB here, three caps)."""
    items = [b"PAI_JOB_NAME=early"] + [f"V{i}=".encode() + b"v" * 1000 for i in range(12_000)]
    items.append(b"PAI_USER_NAME=beyond-the-cap")
    path = _environ(tmp_path, items)
    assert Path(path).stat().st_size > 12_000_000
    tracemalloc.start()
    found = scan_environ(path, {"PAI_JOB_NAME", "PAI_USER_NAME"}, cap=4 * 1024 * 1024)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert found == {"PAI_JOB_NAME": "early"}  # keys past the cap are not seen (docs/jobs.md)
    assert peak < 8 * CHUNK


def test_a_locked_read_that_does_not_return_is_abandoned_and_blocks_no_later_cycle() -> None:
    reads = LockedReads(timeout=0.2, name="test-proc-reader")
    release = threading.Event()
    with pytest.raises(NotNow):
        reads.run(release.wait)  # stands in for a read blocked on a hung process's lock
    with pytest.raises(NotNow):
        reads.run(lambda: "never started")  # the helper is still stuck: nothing else is tried
    release.set()
    done = threading.Event()
    while not done.is_set():  # the stuck read returns once the lock is released; then reads work again
        try:
            assert reads.run(lambda: "fresh") == "fresh"
            done.set()
        except NotNow:
            done.wait(0.05)


def test_a_locked_read_is_not_attempted_for_a_process_in_d_state(tmp_path: Path) -> None:
    pid_dir = tmp_path / "42"
    pid_dir.mkdir()
    (pid_dir / "stat").write_text(stat_line(Proc(42, state="D")))
    os.mkfifo(pid_dir / "environ")
    os.mkfifo(pid_dir / "cmdline")
    reads = LockedReads(timeout=5.0)
    with pytest.raises(NotNow):
        reads.environ(str(tmp_path), 42, {"PAI_JOB_NAME"})
    with pytest.raises(NotNow):
        reads.cmdline(str(tmp_path), 42, "D")
    assert reads.environ(str(tmp_path), 43, {"PAI_JOB_NAME"}) is None  # gone
