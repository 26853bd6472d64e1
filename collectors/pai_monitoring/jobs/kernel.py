"""Everything the jobs collector (and ``node_health``) reads from the kernel: cgroup hierarchies, cgroup files, /proc.

Every read here follows three rules, so that a cycle can neither hang nor balloon:

* **A fixed cap per file.** A file longer than its cap counts as unreadable (a figure taken from part of a file is
  a wrong figure); only ``cgroup.procs`` is read as a prefix, since its first pids are all that is wanted.
* **Non-blocking opens.** ``O_NONBLOCK`` means a FIFO or another special file where a kernel file should be cannot
  block the open or the read.
* **No lock of another process.** ``/proc/<pid>/environ`` and ``/proc/<pid>/cmdline`` take the target's memory-map
  lock, which a process stuck in the kernel may hold forever. They are never read for a process in state ``D``
  (``stat``, ``status`` and ``cgroup`` take no such lock), and only through :class:`LockedReads`, whose helper
  thread is abandoned, never waited for, when a read does not return in time.

Values come back in the kernel's own terms (bytes, seconds, counts); what they mean for a job is worked out in
:mod:`.derive`.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

SMALL_FILE_CAP = 64 * 1024
"""cgroup statistics files, ``/proc/<pid>/{cgroup,status,net/dev}``, ``devices.list``: a few KiB on real hosts."""
PROC_STAT_CAP = 4096
"""``/proc/<pid>/stat`` is a few hundred bytes."""
PIDS_HEAD_CAP = 4096
"""The prefix of ``cgroup.procs`` read to find a unit's first processes."""
ENVIRON_CAP = 4 * 1024 * 1024
"""At most this much of ``/proc/<pid>/environ`` is scanned, in :data:`CHUNK` pieces (memory stays at one chunk)."""
CMDLINE_CAP = 4096
CHUNK = 64 * 1024
LOCKED_READ_TIMEOUT_SECONDS = 1.0
_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
UNLIMITED_V1 = 1 << 62
"""cgroup v1 reports "no limit" as a huge page-rounded number; anything above this counts as unlimited."""


# ---- capped reads ----


def read_file(path: str, cap: int = SMALL_FILE_CAP) -> bytes | None:
    """The whole file, or ``None`` when it is missing, unreadable or longer than ``cap`` bytes."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return None
    try:
        # kernel files answer a read with all they have; a short read is the end (one syscall per file)
        data = os.read(fd, cap + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= cap else None


def read_head(path: str, cap: int) -> bytes | None:
    """The first ``cap`` bytes of a file (the rest is not read); ``None`` when unreadable."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return None
    try:
        return os.read(fd, cap)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_int(path: str) -> int | None:
    """A file holding one integer (``cpuacct.usage``, ``memory.current``); ``None`` if unreadable or not a number
    (``memory.max`` reads ``max`` when there is no limit)."""
    data = read_file(path, 64)
    if data is None:
        return None
    try:
        return int(data)
    except ValueError:
        return None


def read_link(path: str) -> str | None:
    try:
        return os.readlink(path)  # noqa: PTH115 - str path on purpose, this runs for every container each cycle
    except OSError:
        return None


def list_dirs(path: str) -> list[str] | None:
    """Names of the subdirectories of ``path`` (symlinks not followed), ``None`` when it cannot be listed."""
    try:
        with os.scandir(path) as entries:
            return [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return None


def stat_value(data: bytes | None, key: bytes) -> int | None:
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


# ---- cgroup hierarchies ----


@dataclass(frozen=True)
class Hierarchies:
    """The mounted cgroup hierarchies: absolute directories, ``None`` where a controller is not mounted."""

    version: int
    walk_root: str
    """The hierarchy walked to find units: the unified one on v2, else memory (pids, cpuacct, name=systemd)."""
    walk_controller: str
    """How the walked hierarchy appears in ``/proc/<pid>/cgroup``: a v1 controller name, or ``""`` for v2."""
    cpu: str | None
    memory: str | None
    blkio: str | None
    devices: str | None
    freezer: str | None = None
    others: tuple[str, ...] = ()
    """The other v1 hierarchies (Slurm may constrain only some controllers)."""


_WALK_PREFERENCE = ("memory", "pids", "cpuacct", "name=systemd")


def find_hierarchies(cgroup_root: str) -> Hierarchies | None:
    """The hierarchies under ``<sys>/fs/cgroup``: v2, or v1 including hybrid hosts; ``None`` if nothing is there."""
    if os.path.exists(os.path.join(cgroup_root, "cgroup.controllers")):  # noqa: PTH110, PTH118 - str paths
        return Hierarchies(2, cgroup_root, "", cgroup_root, cgroup_root, cgroup_root, None)
    names = list_dirs(cgroup_root)
    if names is None:
        return None
    by_controller: dict[str, str] = {}
    for name in sorted(names, key=len):
        for controller in name.split(","):
            by_controller.setdefault(controller, os.path.join(cgroup_root, name))  # noqa: PTH118
    if "systemd" in by_controller:
        by_controller.setdefault("name=systemd", by_controller["systemd"])
    walk = next((c for c in _WALK_PREFERENCE if c in by_controller), None)
    if walk is None:
        return None
    others = sorted({path for ctl, path in by_controller.items() if path != by_controller[walk] and ctl != "unified"})
    return Hierarchies(
        version=1,
        walk_root=by_controller[walk],
        walk_controller=walk,
        cpu=by_controller.get("cpuacct"),
        memory=by_controller.get("memory"),
        blkio=by_controller.get("blkio"),
        devices=by_controller.get("devices"),
        freezer=by_controller.get("freezer"),
        others=tuple(others),
    )


def walk(root: str, classify: Callable[[list[str], str], T | None], start: str = "", max_depth: int = 16) -> list[T]:
    """Every directory below ``root`` (or ``root + start``) that ``classify(parents, name)`` names; nothing below a
    named directory is visited. Directories that vanish during the walk are skipped."""
    found: list[T] = []
    start_parts = [p for p in start.split("/") if p]
    stack: list[tuple[str, list[str]]] = [("/".join([root, *start_parts]), start_parts)]
    while stack:
        directory, parents = stack.pop()
        entries = list_dirs(directory)
        if entries is None:
            continue
        for name in entries:
            unit = classify(parents, name)
            if unit is not None:
                found.append(unit)
            elif len(parents) < max_depth:
                stack.append((directory + "/" + name, [*parents, name]))
    return found


def cgroup_pids(
    root: str, path: str, limit: int = 3, skip: Collection[str] = (), last: Collection[str] = ()
) -> list[int]:
    """Up to ``limit`` process ids in the cgroup at ``path`` or, if it holds none itself, in its descendants.

    Directories named in ``skip`` are not looked into; those named in ``last`` only after the others (Slurm's
    ``slurm`` directories hold slurmstepd, its ``step_extern`` only a placeholder)."""
    stack = [root + path]
    pids: list[int] = []
    while stack and len(pids) < limit:
        directory = stack.pop()
        data = read_head(directory + "/cgroup.procs", PIDS_HEAD_CAP)
        if data:
            pids.extend(int(p) for p in data.split()[: limit - len(pids)] if p.isdigit())
            continue
        children = list_dirs(directory)
        if children:
            children = [c for c in children if c not in skip]
            # popped from the end: the ones to visit last go first into the stack
            children.sort(key=lambda c: (c not in last, c), reverse=False)
            stack.extend(f"{directory}/{c}" for c in children)
    return pids


def _cgroup_lines(proc_root: str, pid: int) -> list[tuple[bool, list[str], str]] | None:
    """``/proc/<pid>/cgroup`` as (is the v2 line, v1 controllers, path); ``None`` if the process is gone."""
    data = read_file(f"{proc_root}/{pid}/cgroup")  # one line per hierarchy: up to a few KiB on v1
    if data is None:
        return None
    lines = []
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3:
            lines.append((fields[0] == "0" and fields[1] == "", fields[1].split(","), fields[2]))
    return lines


def _matches(controller: str, v2: bool, controllers: list[str]) -> bool:
    return v2 if controller == "" else controller in controllers


def pid_cgroup_path(proc_root: str, pid: int, controller: str) -> str | None:
    """The cgroup path of a process in the hierarchy ``controller`` (``""`` = v2), or ``None`` if it is gone."""
    lines = _cgroup_lines(proc_root, pid)
    return next((path for v2, ctl, path in lines or [] if _matches(controller, v2, ctl)), None)


def pid_cgroup_paths(proc_root: str, pid: int, controller: str) -> list[str] | None:
    """The cgroup paths of a process: first in the hierarchy ``controller``, then the other (v1) hierarchies'
    paths (Slurm may constrain only some controllers); ``None`` if the process is gone."""
    lines = _cgroup_lines(proc_root, pid)
    if lines is None:
        return None
    paths = [path for v2, ctl, path in lines if _matches(controller, v2, ctl)]
    for _, _, path in lines:
        if path not in paths:
            paths.append(path)
    return paths


# ---- cgroup statistics ----


@dataclass(slots=True)
class CgroupCounters:
    """What one cgroup's files say, in base units; ``None`` where a file is missing or unreadable.

    All values are hierarchical (a Slurm job includes its steps) and, except memory, cumulative since the cgroup
    was created."""

    cpu_seconds: float | None
    """v1 ``cpuacct.usage`` (ns), v2 ``cpu.stat`` ``usage_usec``."""
    memory_usage: int | None
    """v1 ``memory.usage_in_bytes``, v2 ``memory.current``."""
    inactive_file: int | None
    """v1 ``memory.stat`` ``total_inactive_file``, v2 ``memory.stat`` ``inactive_file``: reclaimable page cache."""
    memory_limit: int | None
    """v1 ``hierarchical_memory_limit`` (else ``memory.limit_in_bytes``), v2 ``memory.max``; ``None`` = no limit."""
    read_bytes: int | None
    write_bytes: int | None
    """v1 ``blkio.throttle.io_service_bytes_recursive`` (else the BFQ scheduler's), v2 ``io.stat``."""


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
    for item in data.split():
        if item.startswith(b"rbytes=") and item[7:].isdigit():
            read += int(item[7:])
        elif item.startswith(b"wbytes=") and item[7:].isdigit():
            write += int(item[7:])
    return read, write


def _counters_v1(h: Hierarchies, path: str) -> CgroupCounters:
    cpu_ns = read_int(h.cpu + path + "/cpuacct.usage") if h.cpu else None
    usage = inactive = limit = None
    if h.memory:
        base = h.memory + path
        stat = read_file(base + "/memory.stat")
        usage = read_int(base + "/memory.usage_in_bytes")
        inactive = stat_value(stat, b"total_inactive_file")
        # the effective limit (the lowest on the way up) is in memory.stat: one file fewer per container
        limit = stat_value(stat, b"hierarchical_memory_limit")
        if limit is None:
            limit = read_int(base + "/memory.limit_in_bytes")
        if limit is not None and limit >= UNLIMITED_V1:
            limit = None
    blk = None
    if h.blkio:
        base = h.blkio + path
        # recent kernels count here only for disks with a throttle rule; BFQ counts for its own disks
        blk = parse_blkio_v1(read_file(base + "/blkio.throttle.io_service_bytes_recursive"))
        if blk is None:
            blk = parse_blkio_v1(read_file(base + "/blkio.bfq.io_service_bytes_recursive"))
        if blk is None:
            blk = (0, 0)
    return CgroupCounters(
        cpu_seconds=None if cpu_ns is None else cpu_ns / 1e9,
        memory_usage=usage,
        inactive_file=inactive,
        memory_limit=limit,
        read_bytes=None if blk is None else blk[0],
        write_bytes=None if blk is None else blk[1],
    )


def _counters_v2(h: Hierarchies, path: str) -> CgroupCounters:
    base = h.walk_root + path
    usage_usec = stat_value(read_file(base + "/cpu.stat"), b"usage_usec")
    blk = parse_io_stat_v2(read_file(base + "/io.stat"))
    return CgroupCounters(
        cpu_seconds=None if usage_usec is None else usage_usec / 1e6,
        memory_usage=read_int(base + "/memory.current"),
        inactive_file=stat_value(read_file(base + "/memory.stat"), b"inactive_file"),
        memory_limit=read_int(base + "/memory.max"),  # "max" does not parse: no limit
        read_bytes=None if blk is None else blk[0],
        write_bytes=None if blk is None else blk[1],
    )


def read_counters(h: Hierarchies, path: str) -> CgroupCounters:
    return _counters_v1(h, path) if h.version == 1 else _counters_v2(h, path)


# ---- /proc ----


@dataclass(frozen=True)
class ProcStat:
    """Fields of ``/proc/<pid>/stat``, which the kernel fills without taking any lock of the process."""

    pid: int
    comm: str
    """The command name (``comm``), at most 15 characters."""
    state: str
    flags: int
    """The kernel's ``PF_*`` flags (``0x00200000``: a kernel thread)."""
    start_ticks: int
    """Start time after boot in clock ticks: with the pid it names one process, even after the pid is reused."""
    rss_bytes: int


def parse_stat(pid: int, data: bytes) -> ProcStat:
    """Parse ``/proc/<pid>/stat``; the command name may itself hold spaces and parentheses."""
    text = data.decode("utf-8", "replace")
    open_paren, close_paren = text.index("("), text.rindex(")")
    rest = text[close_paren + 2 :].split()
    # rest[0] is field 3 (state); flags is field 9, starttime 22, rss 24
    return ProcStat(
        pid=pid,
        comm=text[open_paren + 1 : close_paren],
        state=rest[0],
        flags=int(rest[6]),
        start_ticks=int(rest[19]),
        rss_bytes=int(rest[21]) * PAGE_SIZE,
    )


def read_stat(proc_root: str, pid: int) -> ProcStat | None:
    data = read_file(f"{proc_root}/{pid}/stat", PROC_STAT_CAP)
    if data is None:
        return None
    try:
        return parse_stat(pid, data)
    except (ValueError, IndexError):
        return None


@dataclass(frozen=True)
class ProcStatus:
    uid: int | None
    """The real uid (first field of ``Uid:``)."""
    context_switches: int | None
    """Voluntary plus involuntary context switches of the process's main thread."""


def read_status(proc_root: str, pid: int) -> ProcStatus | None:
    data = read_file(f"{proc_root}/{pid}/status")  # its Groups: line grows with the supplementary groups
    if data is None:
        return None
    uid = None
    switches: int | None = None
    for line in data.split(b"\n"):
        key, _, value = line.partition(b":")
        if key == b"Uid":
            fields = value.split()
            uid = int(fields[0]) if fields and fields[0].isdigit() else None
        elif key in (b"voluntary_ctxt_switches", b"nonvoluntary_ctxt_switches") and value.strip().isdigit():
            switches = (switches or 0) + int(value)
    return ProcStatus(uid, switches)


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
    data = read_file(f"{proc_root}/{pid}/net/dev")
    return None if data is None else parse_net_dev(data)


def net_namespace(proc_root: str, pid: int) -> str | None:
    """The network namespace of a process (``net:[4026531993]``), ``None`` if gone or not readable."""
    return read_link(f"{proc_root}/{pid}/ns/net")


def process_exists(proc_root: str, pid: int) -> bool:
    return os.path.isdir(f"{proc_root}/{pid}")  # noqa: PTH112 - str path


def mem_total_bytes(proc_root: str) -> int | None:
    """``MemTotal`` of ``/proc/meminfo``: the limit ``docker stats`` shows for a container without one."""
    data = read_file(f"{proc_root}/meminfo")
    if data is None:
        return None
    for line in data.split(b"\n"):
        if line.startswith(b"MemTotal:"):
            fields = line.split()
            return int(fields[1]) * 1024 if len(fields) > 1 and fields[1].isdigit() else None
    return None


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


def scan_environ(path: str, wanted: Collection[str], cap: int = ENVIRON_CAP) -> dict[str, str] | None:
    """The ``wanted`` keys of an environment file, scanning at most ``cap`` bytes one :data:`CHUNK` at a time."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return None
    env: dict[str, str] = {}
    tail = b""
    dropping = False  # inside an entry longer than a chunk: no key we want is that long, skip to its end
    total = 0
    try:
        while total < cap:
            chunk = os.read(fd, min(CHUNK, cap - total))
            if not chunk:
                break
            total += len(chunk)
            if dropping:
                end = chunk.find(b"\0")
                if end < 0:
                    continue
                chunk, dropping = chunk[end + 1 :], False
            items = (tail + chunk).split(b"\0")
            tail = items.pop()
            if len(tail) > CHUNK:
                tail, dropping = b"", True
            env.update(parse_environ(b"\0".join(items), wanted))
        else:
            tail = b""  # cut off at the cap: the last entry is incomplete
    except OSError:
        return None
    finally:
        os.close(fd)
    if tail and not dropping:
        env.update(parse_environ(tail, wanted))
    return env


def read_cmdline(path: str, cap: int = CMDLINE_CAP) -> list[str] | None:
    data = read_head(path, cap)
    return None if data is None else [part.decode("utf-8", "replace") for part in data.split(b"\0") if part]


# ---- reads that take another process's lock ----


class NotNow(Exception):
    """The read was not attempted: the process is in D state, or an earlier locked read is still stuck."""


class _Slot(Generic[T]):
    def __init__(self, call: Callable[[], T]) -> None:
        self.call = call
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


class LockedReads:
    """Runs reads of ``/proc/<pid>/environ`` and ``cmdline`` in one helper thread, waiting at most ``timeout``.

    A read that does not return in time is abandoned: the helper stays blocked in the kernel until the lock it
    waits for is released, and until then every further read raises :class:`NotNow` at once. So the collector's
    own thread never blocks, and at most one helper thread is ever stuck."""

    def __init__(self, timeout: float = LOCKED_READ_TIMEOUT_SECONDS, name: str = "pai-proc-reader") -> None:
        self.timeout = timeout
        self._name = name
        self._requests: queue.SimpleQueue[_Slot[object]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stuck: _Slot[object] | None = None

    def _serve(self) -> None:
        while True:
            slot = self._requests.get()
            try:
                slot.value = slot.call()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller, which re-raises it
                slot.error = exc
            slot.done.set()

    def run(self, call: Callable[[], T]) -> T:
        if self._stuck is not None:
            if not self._stuck.done.is_set():
                raise NotNow("an earlier read of /proc is still blocked")
            self._stuck = None
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        slot: _Slot[T] = _Slot(call)
        self._requests.put(slot)  # type: ignore[arg-type]
        if not slot.done.wait(self.timeout):
            self._stuck = slot  # type: ignore[assignment]
            raise NotNow("a read of /proc did not return in time")
        if slot.error is not None:
            raise slot.error
        return slot.value  # type: ignore[return-value]

    def environ(self, proc_root: str, pid: int, wanted: Collection[str]) -> dict[str, str] | None:
        """The ``wanted`` keys of a process's environment; ``None`` if it is gone or not readable.

        Raises :class:`NotNow` for a process in D state (its lock may be held by a stuck thread of its own)."""
        stat = read_stat(proc_root, pid)
        if stat is None:
            return None
        if stat.state == "D":
            raise NotNow(f"process {pid} is in D state")
        return self.run(lambda: scan_environ(f"{proc_root}/{pid}/environ", wanted))

    def cmdline(self, proc_root: str, pid: int, state: str) -> list[str] | None:
        """A process's command line (its first :data:`CMDLINE_CAP` bytes); ``state`` as just read from its stat."""
        if state == "D":
            raise NotNow(f"process {pid} is in D state")
        return self.run(lambda: read_cmdline(f"{proc_root}/{pid}/cmdline"))
