"""What the collector reads about single processes from ``/proc``: environment, network namespace and counters.

Reading ``/proc/<pid>/environ`` and ``/proc/<pid>/ns/net`` of another user's process needs ptrace read access
(``CAP_SYS_PTRACE``); without it these return ``None`` and the identity falls back to ``unknown``.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from pai_monitoring.jobs.fastio import read_bytes, read_link


def parse_environ(data: bytes, wanted: Collection[str] | None = None) -> dict[str, str]:
    """``KEY=value`` pairs of a NUL-separated environment block; only ``wanted`` keys when given."""
    env: dict[str, str] = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if not sep or not key:
            continue
        name = key.decode("utf-8", "replace")
        if wanted is None or name in wanted:
            env[name] = value.decode("utf-8", "replace")
    return env


def read_environ(proc_root: str, pid: int, wanted: Collection[str] | None = None) -> dict[str, str] | None:
    data = read_bytes(f"{proc_root}/{pid}/environ")
    return None if data is None else parse_environ(data, wanted)


def net_namespace(proc_root: str, pid: int) -> str | None:
    """The network namespace of a process (``net:[4026531993]``), ``None`` if gone or not readable."""
    return read_link(f"{proc_root}/{pid}/ns/net")


def parse_net_dev(data: bytes) -> tuple[int, int]:
    """Received and transmitted bytes summed over the interfaces of ``/proc/<pid>/net/dev``, loopback excluded."""
    rx = tx = 0
    for line in data.split(b"\n")[2:]:
        name, sep, counters = line.partition(b":")
        if not sep or name.strip() == b"lo":
            continue
        fields = counters.split()
        if len(fields) >= 9 and fields[0].isdigit() and fields[8].isdigit():
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


def read_net_dev(proc_root: str, pid: int) -> tuple[int, int] | None:
    data = read_bytes(f"{proc_root}/{pid}/net/dev")
    return None if data is None else parse_net_dev(data)


def process_uid(proc_root: str, pid: int) -> int | None:
    """The real uid of a process, from the ``Uid:`` line of ``/proc/<pid>/status``."""
    data = read_bytes(f"{proc_root}/{pid}/status")
    if data is None:
        return None
    for line in data.split(b"\n"):
        if line.startswith(b"Uid:"):
            fields = line.split()
            return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
    return None


def process_comm(proc_root: str, pid: int) -> str | None:
    data = read_bytes(f"{proc_root}/{pid}/comm")
    return None if data is None else data.decode("utf-8", "replace").strip()


def process_exists(proc_root: str, pid: int) -> bool:
    return os.path.isdir(f"{proc_root}/{pid}")  # noqa: PTH112 - str path


def mem_total_bytes(proc_root: str) -> int | None:
    """``MemTotal`` of ``/proc/meminfo``: the limit ``docker stats`` shows for a container without one."""
    data = read_bytes(f"{proc_root}/meminfo")
    if data is None:
        return None
    for line in data.split(b"\n"):
        if line.startswith(b"MemTotal:"):
            fields = line.split()
            return int(fields[1]) * 1024 if len(fields) > 1 and fields[1].isdigit() else None
    return None
