"""CPU, memory and block I/O of one cgroup, cgroup v1 or v2.

Memory usage is the working set as ``docker stats`` reports it (the original's source): usage minus inactive file
cache. Block I/O on cgroup v1 comes from ``blkio.throttle.io_service_bytes_recursive``; recent kernels count there
only for devices with a throttle rule, so when it has no device lines the BFQ scheduler's counters are used if
present. All values are cumulative since the cgroup was created, and hierarchical (a Slurm job includes its steps).
"""

from __future__ import annotations

from dataclasses import dataclass

from pai_monitoring.jobs.cgroups import CgroupLayout
from pai_monitoring.jobs.fastio import read_bytes, read_int

UNLIMITED_V1 = 1 << 62
"""cgroup v1 reports "no limit" as a huge page-rounded number; anything above this counts as unlimited."""


@dataclass(frozen=True)
class CgroupSample:
    cpu_seconds: float | None
    memory_bytes: int | None
    memory_limit_bytes: int | None
    """``None`` when the cgroup has no memory limit."""
    read_bytes: int | None
    write_bytes: int | None


def _stat_value(data: bytes | None, key: bytes) -> int | None:
    """The value of ``key`` in a ``name value`` per line file (``memory.stat``, ``cpu.stat``)."""
    if data is None:
        return None
    start = data.find(b"\n" + key + b" ")
    if start < 0:
        if not data.startswith(key + b" "):
            return None
        start = -1
    begin = start + len(key) + 2
    end = data.find(b"\n", begin)
    try:
        return int(data[begin : end if end >= 0 else None])
    except ValueError:
        return None


def parse_blkio_v1(data: bytes | None) -> tuple[int, int] | None:
    """Bytes read and written from ``blkio.*io_service_bytes*``; ``None`` when it has no device lines."""
    if not data:
        return None
    read = write = 0
    seen = False
    for line in data.split(b"\n"):
        fields = line.split()
        if len(fields) != 3:
            continue
        if fields[1] == b"Read" and fields[2].isdigit():
            read += int(fields[2])
            seen = True
        elif fields[1] == b"Write" and fields[2].isdigit():
            write += int(fields[2])
            seen = True
    return (read, write) if seen else None


def parse_io_stat_v2(data: bytes | None) -> tuple[int, int] | None:
    """Bytes read and written from cgroup v2 ``io.stat`` (``8:0 rbytes=.. wbytes=.. ...`` per device)."""
    if data is None:
        return None
    read = write = 0
    for field in data.split():
        if field.startswith(b"rbytes=") and field[7:].isdigit():
            read += int(field[7:])
        elif field.startswith(b"wbytes=") and field[7:].isdigit():
            write += int(field[7:])
    return read, write


def _working_set(usage: int | None, stat: bytes | None, inactive_key: bytes) -> int | None:
    if usage is None:
        return None
    inactive = _stat_value(stat, inactive_key) or 0
    return max(0, usage - inactive)


def sample_v1(layout: CgroupLayout, path: str) -> CgroupSample:
    cpu_ns = read_int(layout.cpu + path + "/cpuacct.usage") if layout.cpu else None
    memory = limit = None
    if layout.memory:
        base = layout.memory + path
        stat = read_bytes(base + "/memory.stat")
        memory = _working_set(read_int(base + "/memory.usage_in_bytes"), stat, b"total_inactive_file")
        # the effective limit (the lowest on the way up) is in memory.stat: one file fewer per container
        limit = _stat_value(stat, b"hierarchical_memory_limit")
        if limit is None:
            limit = read_int(base + "/memory.limit_in_bytes")
        if limit is not None and limit >= UNLIMITED_V1:
            limit = None
    blk = None
    if layout.blkio:
        base = layout.blkio + path
        blk = parse_blkio_v1(read_bytes(base + "/blkio.throttle.io_service_bytes_recursive"))
        if blk is None:
            blk = parse_blkio_v1(read_bytes(base + "/blkio.bfq.io_service_bytes_recursive"))
        if blk is None:
            blk = (0, 0)
    return CgroupSample(
        cpu_seconds=None if cpu_ns is None else cpu_ns / 1e9,
        memory_bytes=memory,
        memory_limit_bytes=limit,
        read_bytes=None if blk is None else blk[0],
        write_bytes=None if blk is None else blk[1],
    )


def sample_v2(layout: CgroupLayout, path: str) -> CgroupSample:
    base = layout.walk_root + path
    usage_usec = _stat_value(read_bytes(base + "/cpu.stat"), b"usage_usec")
    memory = _working_set(read_int(base + "/memory.current"), read_bytes(base + "/memory.stat"), b"inactive_file")
    limit = read_int(base + "/memory.max")  # "max" does not parse: no limit
    blk = parse_io_stat_v2(read_bytes(base + "/io.stat"))
    return CgroupSample(
        cpu_seconds=None if usage_usec is None else usage_usec / 1e6,
        memory_bytes=memory,
        memory_limit_bytes=limit,
        read_bytes=None if blk is None else blk[0],
        write_bytes=None if blk is None else blk[1],
    )


def sample(layout: CgroupLayout, path: str) -> CgroupSample:
    return sample_v1(layout, path) if layout.version == 1 else sample_v2(layout, path)
