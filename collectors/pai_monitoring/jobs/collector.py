"""The ``jobs`` collector: task and service metrics per job, GPU attribution, and the runtimes' health.

Each cycle walks the cgroup tree (:mod:`.cgroups`), samples every unit (:mod:`.stats`), names it (:mod:`.resolve`),
attributes GPUs from the GPU collector's latest state (:mod:`.gpus`) and adds up the units of one job (a job's
containers, or one Slurm job) into the original ``task_*`` series. Percentages and per-second rates need two
samples: a unit's first cycle yields only its counters and byte totals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from prometheus_client.metrics_core import Metric

from pai_monitoring.jobs import metrics as m
from pai_monitoring.jobs.aggregate import Observation, aggregate
from pai_monitoring.jobs.cgroups import (
    CgroupLayout,
    Unit,
    cgroup_pids,
    classify_path,
    detect_layout,
    discover,
    pid_cgroup_path,
)
from pai_monitoring.jobs.fastio import read_bytes, read_link
from pai_monitoring.jobs.gpus import job_minors
from pai_monitoring.jobs.identity import JobIdentity, has_job_keys, job_identity
from pai_monitoring.jobs.procfs import mem_total_bytes, net_namespace, read_net_dev
from pai_monitoring.jobs.resolve import Resolved, resolve, slurm_identity
from pai_monitoring.jobs.runtimeview import RuntimeSources, RuntimeView
from pai_monitoring.jobs.stats import sample
from pai_monitoring.runtime.collector import Collector, CollectorContext, CollectorOptions
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.shared_model import GPU_STATE, GpuState

DEFAULT_SERVICES = (
    # the original whitelist's names that make sense outside Kubernetes
    "node-exporter",
    "job-exporter",
    "watchdog",
    "prometheus",
    "alertmanager",
    "grafana",
    "prometheus-pushgateway",
    "fluentd",
    "postgresql",
    "nvidia-device-plugin-ctr",
    # this suite's own units and the Debian package names of its parts
    "pai-job-exporter",
    "pai-watchdog",
    "prometheus-node-exporter",
    "prometheus-alertmanager",
)
DEFAULT_SOCKET_TIMEOUT_SECONDS = 1.0
SOCKET_WAITS_PER_CYCLE = 5
"""Docker ping, container list, two timeouts of inspects, containerd connect: the most a cycle waits on sockets."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobsOptions(CollectorOptions):
    service_names: tuple[str, ...] = field(
        default=DEFAULT_SERVICES,
        metadata={
            "help": "Container names, Kubernetes container names and systemd units (without .service) "
            "exported as service_* metrics."
        },
    )
    docker_socket: str = field(
        default="/run/docker.sock", metadata={"help": "Docker Engine API socket; empty to never ask docker."}
    )
    containerd_socket: str = field(
        default="/run/containerd/containerd.sock",
        metadata={"help": "containerd socket, only connected to for containerd_daemon_count; empty to skip."},
    )
    containerd_state_dir: str = field(
        default="/run/containerd/io.containerd.runtime.v2.task",
        metadata={"help": "containerd's task state directory (OCI bundles with Kubernetes annotations)."},
    )
    podman_graph_root: str = field(
        default="/var/lib/containers/storage", metadata={"help": "podman's storage root; empty to skip podman."}
    )
    podman_run_root: str = field(
        default="/run/containers/storage", metadata={"help": "podman's run root (conmon pid files)."}
    )
    socket_timeout: float = field(
        default=DEFAULT_SOCKET_TIMEOUT_SECONDS,
        metadata={"help": "Seconds to wait for a runtime socket to answer one request."},
    )
    gpu_state_max_age: float = field(
        default=90.0,
        metadata={"help": "GPU collector data older than this many seconds is not used (no GPU series then)."},
    )

    def validate(self) -> None:
        super().validate()
        for name in ("socket_timeout", "gpu_state_max_age"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, "must be a positive number of seconds")
        if SOCKET_WAITS_PER_CYCLE * self.socket_timeout >= self.timeout:
            raise ConfigError(
                "socket_timeout",
                f"a cycle may wait {SOCKET_WAITS_PER_CYCLE} socket timeouts; that must fit in the collection timeout",
            )


@dataclass
class _Memo:
    resolved: Resolved
    cpu: tuple[float, float] | None = None
    """(time, cpu seconds) of the previous cycle."""
    identity: JobIdentity | None = None
    identity_of: dict[str, str] | None = None
    """The ``resolved.values`` the identity was computed from (recomputed when they are replaced)."""
    netns: tuple[int, str | None] | None = None
    """(pid, its network namespace): read again only when the unit's first process changes."""


@dataclass(frozen=True)
class _GpuProcessOwner:
    unit: Unit | None
    minor_number: str
    pid: int
    memory: int | None


class JobsCollector(Collector[JobsOptions]):
    name: ClassVar[str] = "jobs"
    description: ClassVar[str] = "jobs, containers and services from cgroups and /proc; GPU attribution"
    options_class: ClassVar[type[CollectorOptions]] = JobsOptions
    metrics: ClassVar[tuple[MetricSpec, ...]] = m.ALL_SPECS

    def __init__(self, options: JobsOptions, context: CollectorContext, clock: Callable[[], float] = time.monotonic):
        super().__init__(options, context)
        self._clock = clock
        self._proc = str(context.proc_root)
        self._cgroup_root = str(context.sys_root / "fs" / "cgroup")
        self._services = frozenset(options.service_names)
        self._sources = RuntimeSources(
            options.docker_socket,
            options.containerd_socket,
            options.containerd_state_dir,
            options.podman_graph_root,
            options.podman_run_root,
            self._proc,
            options.socket_timeout,
        )
        self._memos: dict[str, _Memo] = {}
        self._net_prev: dict[str, tuple[float, int, int]] = {}

    def collect(self) -> Iterable[Metric]:
        now = self._clock()
        layout = detect_layout(self._cgroup_root)
        units = discover(layout, self._services) if layout is not None else []
        view = self._sources.view()
        gpu_state = self.context.shared.latest(GPU_STATE, max_age=self.options.gpu_state_max_age)
        owners = self._gpu_owners(layout, units, gpu_state) if layout is not None and gpu_state else []
        # PID 1 is in the host's namespace; where it cannot be read (a hardened init), our own namespace is,
        # since the exporter runs with the host's network.
        host_ns = net_namespace(self._proc, 1) or read_link(f"{self._proc}/self/ns/net")
        mem_total = mem_total_bytes(self._proc)
        observations: list[Observation] = []
        net_now: dict[str, tuple[float, int, int]] = {}
        seen: set[str] = set()
        for unit in units:
            assert layout is not None
            seen.add(unit.key)
            try:
                obs = self._observe(unit, layout, view, gpu_state, owners, host_ns, net_now, now)
            except (OSError, ValueError) as exc:  # a unit that vanished or changed mid-read: skip it, keep the cycle
                log.debug("skipping %s: %s", unit.path, exc)
                continue
            if obs is not None:
                observations.append(obs)
        for key in set(self._memos) - seen:
            del self._memos[key]
        self._net_prev = net_now
        yield from aggregate(observations, mem_total, gpu_state is not None)
        if gpu_state is not None:
            yield from self._gpu_health(owners, view)
        yield from self._daemon_health(view)

    def _observe(
        self,
        unit: Unit,
        layout: CgroupLayout,
        view: RuntimeView,
        gpu_state: GpuState | None,
        owners: list[_GpuProcessOwner],
        host_ns: str | None,
        net_now: dict[str, tuple[float, int, int]],
        now: float,
    ) -> Observation | None:
        pids = cgroup_pids(layout.walk_root, unit.path)
        if not pids:
            return None  # gone, or an empty cgroup left behind: nothing runs in it
        memo = self._memos.get(unit.key)
        resolved = resolve(unit, pids, view, self._sources, self._proc, memo.resolved if memo else None)
        if memo is None:
            memo = self._memos[unit.key] = _Memo(resolved)
        if resolved.kube is not None and resolved.kube.sandbox:
            return None
        if memo.identity_of is not resolved.values:
            if unit.kind == "slurm":
                memo.identity = slurm_identity(unit, resolved, pids, self._proc)
            else:
                memo.identity = job_identity(resolved.values) if has_job_keys(resolved.values) else None
            memo.identity_of = resolved.values
        identity = memo.identity
        service = resolved.name if resolved.name in self._services else None
        if identity is None and service is None:
            return None
        stats = sample(layout, unit.path)
        cpu_percent = None
        if stats.cpu_seconds is not None:
            if memo.cpu is not None and now > memo.cpu[0]:
                cpu_percent = max(0.0, (stats.cpu_seconds - memo.cpu[1]) / (now - memo.cpu[0]) * 100)
            memo.cpu = (now, stats.cpu_seconds)
        if memo.netns is None or memo.netns[0] != pids[0]:
            memo.netns = (pids[0], net_namespace(self._proc, pids[0]))
        netns, net_total, net_rate = self._network(pids[0], memo.netns[1], host_ns, net_now, now)
        minors: frozenset[str] = frozenset()
        gpu_memory: dict[str, int] = {}
        if gpu_state is not None and identity is not None:
            mine = [o for o in owners if o.unit is not None and o.unit.key == unit.key]
            for owner in mine:
                if owner.memory is not None:
                    gpu_memory[owner.minor_number] = gpu_memory.get(owner.minor_number, 0) + owner.memory
            devices = read_bytes(f"{layout.devices}{unit.path}/devices.list") if layout.devices else None
            minors = job_minors(devices, resolved.values, frozenset(o.minor_number for o in mine), gpu_state)
        return Observation(
            unit=unit,
            runtime=view.runtime_of(unit),
            identity=identity,
            service=service,
            kube=resolved.kube,
            stats=stats,
            cpu_percent=cpu_percent,
            netns=netns,
            net_total=net_total,
            net_rate=net_rate,
            gpu_minors=minors,
            gpu_memory=gpu_memory,
            gpu_state=gpu_state,
        )

    def _network(
        self, pid: int, netns: str | None, host_ns: str | None, net_now: dict[str, tuple[float, int, int]], now: float
    ) -> tuple[str | None, tuple[int, int] | None, tuple[float, float] | None]:
        """The unit's own network namespace, its byte counters and rates; all ``None`` for host networking."""
        if netns is None or host_ns is None or netns == host_ns:
            return None, None, None
        if netns not in net_now:
            counters = read_net_dev(self._proc, pid)
            if counters is None:
                return None, None, None
            net_now[netns] = (now, *counters)
        _, rx, tx = net_now[netns]
        prev = self._net_prev.get(netns)
        rate = None
        if prev is not None and now > prev[0]:
            rate = (max(0, rx - prev[1]) / (now - prev[0]), max(0, tx - prev[2]) / (now - prev[0]))
        return netns, (rx, tx), rate

    def _gpu_owners(self, layout: CgroupLayout, units: list[Unit], state: GpuState) -> list[_GpuProcessOwner]:
        """Each GPU process with the unit it runs in (``None``: in none); processes that exited are skipped."""
        by_path = {u.path: u for u in units}
        owners = []
        for process in state.processes:
            path = pid_cgroup_path(self._proc, process.pid, layout.walk_controller)
            if path is None:
                continue
            unit = None
            probe = path
            while probe and unit is None:
                unit = by_path.get(probe)
                probe = probe.rpartition("/")[0]
            if unit is None:
                unit = classify_path(path, self._services)
            owners.append(_GpuProcessOwner(unit, process.minor_number, process.pid, process.used_memory_bytes))
        return owners

    def _gpu_health(self, owners: list[_GpuProcessOwner], view: RuntimeView) -> Iterable[Metric]:
        external = m.GPU_EXTERNAL.family()
        zombie = m.GPU_ZOMBIE.family()
        zombies: set[tuple[str, str]] = set()
        for owner in owners:
            if owner.unit is None:
                external.add_metric([owner.minor_number, str(owner.pid)], 1)
            elif owner.unit.kind == "container" and self._is_zombie(owner.unit, view):
                zombies.add((owner.minor_number, owner.unit.ident))
        for minor, container_id in sorted(zombies):
            zombie.add_metric([minor, container_id], 1)
        yield external
        yield zombie

    def _is_zombie(self, unit: Unit, view: RuntimeView) -> bool:
        status = view.status(unit)
        if status is None and unit.runtime == "podman" and self._sources.podman is not None:
            status = {True: "running", False: "stopped", None: None}[self._sources.podman.running(unit.ident)]
        return status in ("stopped", "unknown")

    @staticmethod
    def _daemon_health(view: RuntimeView) -> Iterable[Metric]:
        for spec, health in ((m.DOCKER_DAEMON, view.docker_health), (m.CONTAINERD_DAEMON, view.containerd_health)):
            if health is not None:
                family = spec.family()
                family.add_metric([health], 1)
                yield family
