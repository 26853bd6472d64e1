"""The ``node_health`` collector: processes stuck in the kernel and processes using a lot of memory.

Read straight from ``/proc`` (one ``stat`` file per process; ``cmdline`` only for the few processes reported), so a
cycle never runs ``ps`` and never blocks on a process that is itself stuck.

``zombie_process_count`` keeps the original job-exporter's name and meaning: it counts processes in state ``D``
(uninterruptible sleep, usually waiting on a driver or on storage), not ``Z`` zombies. A D-state ``nvidia-smi`` was
the original's sign of a hung GPU driver, so every command line containing ``nvidia-smi`` is counted under
``command="nvidia-smi"``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from prometheus_client.metrics_core import Metric

from pai_monitoring.runtime.collector import Collector, CollectorContext, CollectorOptions
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.metrics import MetricSpec

ZOMBIE_PROCESSES = MetricSpec(
    "zombie_process_count",
    "gauge",
    "Processes in uninterruptible sleep (state D, not Z zombies, as the original counted), by command; "
    'any command line containing nvidia-smi counts as command="nvidia-smi".',
    ("command",),
)
PROCESS_MEMORY = MetricSpec(
    "process_mem_usage_byte",
    "gauge",
    "Resident memory in bytes of each process above the RSS threshold (--collector.node_health.rss-threshold-bytes).",
    ("pid", "cmd"),
)

DEFAULT_RSS_THRESHOLD_BYTES = 500 * 1024 * 1024
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    rss_bytes: int


def parse_stat(pid: int, text: str) -> ProcStat:
    """Parse ``/proc/<pid>/stat``; the command name may itself hold spaces and parentheses."""
    open_paren, close_paren = text.index("("), text.rindex(")")
    rest = text[close_paren + 2 :].split()
    # rest[0] is field 3 (state); rss is field 24, so rest[21].
    comm = text[open_paren + 1 : close_paren]
    return ProcStat(pid=pid, comm=comm, state=rest[0], rss_bytes=int(rest[21]) * PAGE_SIZE)


def read_cmdline(proc_root: Path, pid: int) -> list[str]:
    try:
        raw = (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def iter_stats(proc_root: Path) -> Iterator[ProcStat]:
    """Every process's stat; processes that exit mid-walk are skipped."""
    for entry in os.scandir(proc_root):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text(encoding="utf-8", errors="replace")
            yield parse_stat(int(entry.name), text)
        except (OSError, ValueError, IndexError):
            continue


def command_name(argv: list[str], comm: str) -> str:
    if any("nvidia-smi" in part for part in argv) or "nvidia-smi" in comm:
        return "nvidia-smi"
    if argv:
        return argv[0].rsplit("/", 1)[-1] or comm
    return comm


@dataclass(frozen=True)
class NodeHealthOptions(CollectorOptions):
    rss_threshold_bytes: int = field(
        default=DEFAULT_RSS_THRESHOLD_BYTES,
        metadata={"help": "Report processes whose resident memory is above this many bytes."},
    )
    cmd_max_length: int = field(
        default=200, metadata={"help": "Truncate the cmd label of process_mem_usage_byte to this many characters."}
    )

    def validate(self) -> None:
        super().validate()
        if self.rss_threshold_bytes < 0:
            raise ConfigError("rss_threshold_bytes", f"must be at least 0, got {self.rss_threshold_bytes}")
        if self.cmd_max_length < 1:
            raise ConfigError("cmd_max_length", f"must be at least 1, got {self.cmd_max_length}")


class NodeHealthCollector(Collector[NodeHealthOptions]):
    name: ClassVar[str] = "node_health"
    description: ClassVar[str] = "Processes in uninterruptible sleep and processes above a memory threshold, from /proc"
    options_class: ClassVar[type[CollectorOptions]] = NodeHealthOptions
    metrics: ClassVar[tuple[MetricSpec, ...]] = (ZOMBIE_PROCESSES, PROCESS_MEMORY)

    def __init__(self, options: NodeHealthOptions, context: CollectorContext) -> None:
        super().__init__(options, context)

    def collect(self) -> Iterable[Metric]:
        proc_root = self.context.proc_root
        stuck: Counter[str] = Counter()
        big = PROCESS_MEMORY.gauge()
        for stat in iter_stats(proc_root):
            is_stuck = stat.state == "D"
            is_big = stat.rss_bytes > self.options.rss_threshold_bytes
            if not (is_stuck or is_big):
                continue
            argv = read_cmdline(proc_root, stat.pid)
            if is_stuck:
                stuck[command_name(argv, stat.comm)] += 1
            if is_big:
                cmd = " ".join(argv) or f"[{stat.comm}]"
                big.add_metric([str(stat.pid), cmd[: self.options.cmd_max_length]], float(stat.rss_bytes))
        zombies = ZOMBIE_PROCESSES.gauge()
        for command, count in sorted(stuck.items()):
            zombies.add_metric([command], float(count))
        return [zombies, big]
