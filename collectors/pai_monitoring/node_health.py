"""The ``node_health`` collector: processes stuck in the kernel and processes using a lot of memory.

Read straight from ``/proc``: one ``stat`` file per process, which the kernel fills without taking any lock of the
process, so a cycle never runs ``ps`` and never blocks on a process that is itself stuck. A process in state ``D``
is described from ``stat``, ``status`` and ``cgroup`` only; its ``cmdline`` (which takes its memory-map lock, the
lock a hung process may hold forever) is never read, and the ``cmdline`` of a large process is read through a
helper thread that is abandoned, not waited for, if the read does not return (:class:`~.jobs.kernel.LockedReads`).

``zombie_process_count`` keeps the original job-exporter's name and meaning: it counts processes in state ``D``
(uninterruptible sleep, usually waiting on a driver or on storage), not ``Z`` zombies, by command name (``comm``;
the original took ``argv[0]``, and counted any command line containing ``nvidia-smi`` as ``nvidia-smi``).

A process briefly in ``D`` is normal (disk I/O); one that stays there without being scheduled is hung, the state
the kernel's hung-task detector reports. ``pai_processes_stuck`` counts those: in ``D`` at every cycle for at least
``--collector.node_health.stuck-seconds`` without a single context switch, with the job (from the jobs collector's
index of cgroups) and the GPU (from the GPU collector's process list) the process belongs to.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from prometheus_client.metrics_core import Metric

from pai_monitoring.jobs.kernel import LockedReads, NotNow, ProcStat, pid_cgroup_path, read_status
from pai_monitoring.jobs.kernel import read_stat as read_proc_stat
from pai_monitoring.runtime.collector import Collector, CollectorContext, CollectorOptions
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.shared_model import GPU_STATE, JOB_INDEX, GpuState, JobIndex, JobRef

JOB_LABELS = ("job_name", "username", "container_id")
ZOMBIE_PROCESSES = MetricSpec(
    "zombie_process_count",
    "gauge",
    "Processes in uninterruptible sleep (state D, not Z zombies, as the original counted), by command name.",
    ("command",),
)
PROCESS_MEMORY = MetricSpec(
    "process_mem_usage_byte",
    "gauge",
    "Resident memory in bytes of each process above the RSS threshold (--collector.node_health.rss-threshold-bytes), "
    "with the job it runs in (empty outside any job).",
    ("pid", "cmd", *JOB_LABELS),
)
STUCK_PROCESSES = MetricSpec(
    "pai_processes_stuck",
    "gauge",
    "Processes in uninterruptible sleep (D) without a context switch for at least "
    "--collector.node_health.stuck-seconds, by command, job and GPU held (labels empty where none).",
    ("node_name", "command", *JOB_LABELS, "minor_number", "index", "uuid"),
)

DEFAULT_RSS_THRESHOLD_BYTES = 500 * 1024 * 1024
DEFAULT_STUCK_SECONDS = 60.0
MAX_TRACKED = 10000
"""At most this many D-state processes are followed between cycles (an NFS outage can put thousands there)."""
JOBS_INDEX_MAX_AGE_SECONDS = 300.0
GPU_STATE_MAX_AGE_SECONDS = 90.0
_NO_JOB = JobRef("", "", "")


def iter_stats(proc_root: Path) -> Iterator[ProcStat]:
    """Every process's stat; processes that exit mid-walk are skipped."""
    root = str(proc_root)
    with os.scandir(root) as entries:
        pids = [int(e.name) for e in entries if e.name.isdigit()]
    for pid in pids:
        stat = read_proc_stat(root, pid)
        if stat is not None:
            yield stat


@dataclass(frozen=True)
class NodeHealthOptions(CollectorOptions):
    rss_threshold_bytes: int = field(
        default=DEFAULT_RSS_THRESHOLD_BYTES,
        metadata={"help": "Report processes whose resident memory is above this many bytes."},
    )
    cmd_max_length: int = field(
        default=200, metadata={"help": "Truncate the cmd label of process_mem_usage_byte to this many characters."}
    )
    stuck_seconds: float = field(
        default=DEFAULT_STUCK_SECONDS,
        metadata={"help": "A process in D state that has not run for this many seconds counts in pai_processes_stuck."},
    )

    def validate(self) -> None:
        super().validate()
        if self.rss_threshold_bytes < 0:
            raise ConfigError("rss_threshold_bytes", f"must be at least 0, got {self.rss_threshold_bytes}")
        if self.cmd_max_length < 1:
            raise ConfigError("cmd_max_length", f"must be at least 1, got {self.cmd_max_length}")
        if not self.stuck_seconds > 0:
            raise ConfigError("stuck_seconds", f"must be a positive number of seconds, got {self.stuck_seconds}")


class _Owners:
    """The job and GPUs of a process, from what the jobs and GPU collectors published last."""

    def __init__(self, proc_root: str, jobs: JobIndex | None, gpus: GpuState | None) -> None:
        self._proc = proc_root
        self._jobs = jobs
        self._gpus: dict[int, list[tuple[str, str, str]]] = {}
        if gpus is not None:
            devices = {d.minor_number: d for d in gpus.devices}
            for p in gpus.processes:
                device = devices.get(p.minor_number)
                row = (p.minor_number, str(device.index) if device else "", device.uuid if device else "")
                self._gpus.setdefault(p.pid, []).append(row)

    def job(self, pid: int) -> JobRef:
        if self._jobs is None:
            return _NO_JOB
        path = pid_cgroup_path(self._proc, pid, self._jobs.controller)
        return (self._jobs.find(path) if path else None) or _NO_JOB

    def gpus(self, pid: int) -> list[tuple[str, str, str]]:
        return self._gpus.get(pid) or [("", "", "")]


class NodeHealthCollector(Collector[NodeHealthOptions]):
    name: ClassVar[str] = "node_health"
    description: ClassVar[str] = "Processes in uninterruptible sleep and processes above a memory threshold, from /proc"
    options_class: ClassVar[type[CollectorOptions]] = NodeHealthOptions
    metrics: ClassVar[tuple[MetricSpec, ...]] = (ZOMBIE_PROCESSES, PROCESS_MEMORY, STUCK_PROCESSES)

    def __init__(
        self, options: NodeHealthOptions, context: CollectorContext, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(options, context)
        self._clock = clock
        self._reads = LockedReads(name="pai-node-health-proc-reader")
        self._in_d: dict[tuple[int, int], tuple[int | None, float]] = {}
        """(pid, start time) of each process seen in D -> (its context switches, since when unchanged)."""

    def collect(self) -> Iterable[Metric]:
        now = self._clock()
        proc = str(self.context.proc_root)
        shared = self.context.shared
        owners = _Owners(
            proc,
            shared.latest(JOB_INDEX, max_age=JOBS_INDEX_MAX_AGE_SECONDS),
            shared.latest(GPU_STATE, max_age=GPU_STATE_MAX_AGE_SECONDS),
        )
        in_d: Counter[str] = Counter()
        stuck: Counter[tuple[str, ...]] = Counter()
        big = PROCESS_MEMORY.gauge()
        tracked: dict[tuple[int, int], tuple[int | None, float]] = {}
        for stat in iter_stats(self.context.proc_root):
            if stat.state == "D":
                in_d[stat.comm] += 1
                if len(tracked) < MAX_TRACKED and self._still_stuck(proc, stat, now, tracked):
                    job = owners.job(stat.pid)
                    for gpu in owners.gpus(stat.pid):
                        stuck[(self.context.node_name, stat.comm, *_job_row(job), *gpu)] += 1
            if stat.rss_bytes > self.options.rss_threshold_bytes:
                job = owners.job(stat.pid)
                big.add_metric([str(stat.pid), self._cmd(proc, stat), *_job_row(job)], float(stat.rss_bytes))
        self._in_d = tracked
        zombies = ZOMBIE_PROCESSES.gauge()
        for command, count in sorted(in_d.items()):
            zombies.add_metric([command], float(count))
        hung = STUCK_PROCESSES.gauge()
        for row, count in sorted(stuck.items()):
            hung.add_metric(list(row), float(count))
        return [zombies, big, hung]

    def _still_stuck(
        self, proc: str, stat: ProcStat, now: float, tracked: dict[tuple[int, int], tuple[int | None, float]]
    ) -> bool:
        """Whether a process in D has not been scheduled since at least ``stuck_seconds`` ago."""
        status = read_status(proc, stat.pid)
        switches = status.context_switches if status is not None else None
        key = (stat.pid, stat.start_ticks)
        before = self._in_d.get(key)
        since = before[1] if before is not None and before[0] == switches else now
        tracked[key] = (switches, since)
        return now - since >= self.options.stuck_seconds

    def _cmd(self, proc: str, stat: ProcStat) -> str:
        try:
            argv = self._reads.cmdline(proc, stat.pid, stat.state)
        except NotNow:
            argv = None
        cmd = " ".join(argv or []) or f"[{stat.comm}]"
        return cmd[: self.options.cmd_max_length]


def _job_row(job: JobRef) -> tuple[str, str, str]:
    return job.job_name, job.username, job.container_id
