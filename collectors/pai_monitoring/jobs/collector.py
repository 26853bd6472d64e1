"""The ``jobs`` collector: task and service metrics per job, GPU attribution, and the runtimes' health.

A cycle, in order: find the cgroup hierarchies and the units in them (:mod:`.kernel`, named by :mod:`.layouts`);
ask the runtimes once (:mod:`.runtimes`); for each unit, name it (:mod:`.identity`), judge whether its runtime
still runs it, and read its counters (:mod:`.kernel`); attribute GPU processes (:mod:`.gpu_attribution`); then
turn it all into series (:mod:`.derive`, the only module that computes a value).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from prometheus_client.metrics_core import Metric

from pai_monitoring.jobs import derive
from pai_monitoring.jobs import metrics as m
from pai_monitoring.jobs.gpu_attribution import locate_processes, unit_gpus
from pai_monitoring.jobs.identity import (
    SLURM_LAST_DIRS,
    SLURM_SKIP_DIRS,
    JobIdentity,
    Resolved,
    SlurmJob,
    has_job_keys,
    job_identity,
    resolve,
    slurm_identity,
)
from pai_monitoring.jobs.kernel import (
    Hierarchies,
    LockedReads,
    cgroup_pids,
    find_hierarchies,
    list_dirs,
    mem_total_bytes,
    net_namespace,
    pid_cgroup_paths,
    read_counters,
    read_file,
    read_link,
    read_net_dev,
    walk,
)
from pai_monitoring.jobs.layouts import Unit, classify, classify_path, is_slurm_top
from pai_monitoring.jobs.runtimes import STOPPED, UNKNOWN, RuntimeSources, RuntimeView, slurm_status
from pai_monitoring.runtime.collector import Collector, CollectorContext, CollectorOptions
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.shared_model import GPU_STATE, JOB_INDEX, GpuProcess, GpuState, JobIndex, JobRef

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
        default="/var/lib/containers/storage",
        metadata={"help": "containers/storage graph root of podman and CRI-O; empty to skip both."},
    )
    podman_run_root: str = field(
        default="/run/containers/storage",
        metadata={"help": "containers/storage run root of podman and CRI-O (conmon pid files)."},
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
    """What is kept about a unit between cycles."""

    resolved: Resolved
    identity: JobIdentity | None = None
    slurm: SlurmJob | None = None
    identity_of: dict[str, str] | None = None
    """The ``resolved.values`` the identity was computed from (recomputed when they are replaced)."""
    netns: tuple[int, str | None] | None = None
    """(pid, its network namespace): read again only when the unit's first process changes."""


class JobsCollector(Collector[JobsOptions]):
    name: ClassVar[str] = "jobs"
    description: ClassVar[str] = "jobs, containers and services from cgroups and /proc; GPU attribution"
    options_class: ClassVar[type[CollectorOptions]] = JobsOptions
    metrics: ClassVar[tuple[MetricSpec, ...]] = m.ALL_SPECS

    def __init__(self, options: JobsOptions, context: CollectorContext, clock: Callable[[], float] = time.monotonic):
        super().__init__(options, context)
        self._clock = clock
        self._proc = str(context.proc_root)
        self._rootfs = str(context.rootfs)
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
        self._reads = LockedReads(name="pai-jobs-proc-reader")
        self._memos: dict[str, _Memo] = {}
        self._rates = derive.Rates()

    def collect(self) -> Iterable[Metric]:
        now = self._clock()
        h = find_hierarchies(self._cgroup_root)
        units = self._discover(h) if h is not None else []
        view = self._sources.view()
        self._sources.learn([unit for unit, _ in units], view)
        gpu_state = self.context.shared.latest(GPU_STATE, max_age=self.options.gpu_state_max_age)
        by_path = {unit.path: unit for unit, _ in units}
        held: dict[str, list[GpuProcess]] = {}
        external: list[GpuProcess] = []
        if h is not None and gpu_state is not None:
            controller = h.walk_controller
            for owner in locate_processes(
                gpu_state, lambda pid: pid_cgroup_paths(self._proc, pid, controller), self._unit_at(by_path)
            ):
                if owner.unit is None:
                    external.append(owner.process)
                else:
                    held.setdefault(owner.unit.key, []).append(owner.process)
        # PID 1 is in the host's namespace; where it cannot be read (a hardened init), our own namespace is,
        # since the exporter runs with the host's network.
        host_ns = net_namespace(self._proc, 1) or read_link(f"{self._proc}/self/ns/net")
        observations: list[derive.Observation] = []
        zombies: list[derive.Zombie] = []
        index: dict[str, JobRef] = {}
        seen: set[str] = set()
        for unit, root in units:
            assert h is not None
            seen.add(unit.key)
            try:
                obs, zombie = self._observe(unit, root, h, view, gpu_state, held.get(unit.key, []), host_ns)
            except (OSError, ValueError) as exc:  # a unit that vanished or changed mid-read: skip it, keep the cycle
                log.debug("skipping %s: %s", unit.path, exc)
                continue
            if zombie is not None:
                zombies.append(zombie)
            if obs is not None:
                observations.append(obs)
                if obs.identity is not None:
                    index[unit.path] = JobRef(obs.identity.job_name, obs.identity.username, obs.container_id)
        for key in set(self._memos) - seen:
            del self._memos[key]
        if h is not None:
            self.context.shared.publish(JOB_INDEX, JobIndex(h.walk_controller, index))
        yield from derive.jobs(observations, self._rates, now, mem_total_bytes(self._proc), gpu_state)
        yield from derive.health(self.context.node_name, zombies, external, gpu_state)
        yield from self._daemon_health(view)

    def _discover(self, h: Hierarchies) -> list[tuple[Unit, str]]:
        """Every unit of the host, each once, with the hierarchy its processes are listed in."""
        named = functools.partial(classify, services=self._services)
        found = [(unit, h.walk_root) for unit in walk(h.walk_root, named)]
        if h.version == 1 and not any(unit.kind == "slurm" for unit, _ in found):
            # Slurm may constrain other controllers than the walked one; look for its jobs there
            for root in h.others:
                for top in [d for d in list_dirs(root) or [] if is_slurm_top(d)]:
                    found.extend((unit, root) for unit in walk(root, named, "/" + top) if unit.kind == "slurm")
                if any(unit.kind == "slurm" for unit, _ in found):
                    break
        found.sort(key=lambda item: item[0].path)
        return found

    def _unit_at(self, by_path: dict[str, Unit]) -> Callable[[str], Unit | None]:
        def unit_at(path: str) -> Unit | None:
            probe = path
            while probe:
                unit = by_path.get(probe)
                if unit is not None:
                    return unit
                probe = probe.rpartition("/")[0]
            return classify_path(path, self._services)

        return unit_at

    def _observe(
        self,
        unit: Unit,
        root: str,
        h: Hierarchies,
        view: RuntimeView,
        gpu_state: GpuState | None,
        gpu_processes: list[GpuProcess],
        host_ns: str | None,
    ) -> tuple[derive.Observation | None, derive.Zombie | None]:
        slurm = unit.kind == "slurm"
        pids = cgroup_pids(
            root, unit.path, skip=SLURM_SKIP_DIRS if slurm else (), last=SLURM_LAST_DIRS if slurm else ()
        )
        if not pids:
            return None, None  # gone, or an empty cgroup left behind: nothing runs in it
        memo = self._memos.get(unit.key)
        resolved = resolve(unit, pids, view, self._sources, self._proc, self._reads, memo.resolved if memo else None)
        if memo is None:
            memo = self._memos[unit.key] = _Memo(resolved)
        if resolved.kube is not None and resolved.kube.sandbox:
            return None, None  # a pod's pause container
        if memo.identity_of is not resolved.values:
            if slurm:
                memo.identity, memo.slurm = slurm_identity(unit, resolved, pids, self._proc, self._rootfs)
            else:
                memo.identity = job_identity(resolved.values) if has_job_keys(resolved.values) else None
            memo.identity_of = resolved.values
        identity = memo.identity
        container_id = memo.slurm.job_id if memo.slurm is not None else unit.ident
        runtime = view.runtime_of(unit)
        zombie = None
        if unit.kind != "service":
            status = slurm_status(h, unit, self._proc) if slurm else self._sources.status(unit, view, runtime)
            if status in (STOPPED, UNKNOWN):
                zombie = derive.Zombie(unit, container_id, runtime, identity, tuple(gpu_processes))
        service = resolved.name if resolved.name in self._services else None
        if identity is None and service is None:
            return None, zombie
        if memo.netns is None or memo.netns[0] != pids[0]:
            memo.netns = (pids[0], net_namespace(self._proc, pids[0]))
        netns = memo.netns[1]
        net_bytes = None
        if netns is None or host_ns is None or netns == host_ns:
            netns = None  # host networking: no per-job counters exist (docs/jobs.md)
        else:
            net_bytes = read_net_dev(self._proc, pids[0])
        gpus: frozenset[str] = frozenset()
        if gpu_state is not None and identity is not None:
            devices = read_file(f"{h.devices}{unit.path}/devices.list") if h.devices else None
            gpus = unit_gpus(devices, resolved.values, gpu_processes, gpu_state)
        observation = derive.Observation(
            unit=unit,
            container_id=container_id,
            runtime=runtime,
            identity=identity,
            service=service,
            kube=resolved.kube,
            slurm=memo.slurm,
            counters=read_counters(h, unit.path),
            netns=netns if net_bytes is not None else None,
            net_bytes=net_bytes,
            gpus=gpus,
            gpu_processes=tuple(gpu_processes),
        )
        return observation, zombie

    @staticmethod
    def _daemon_health(view: RuntimeView) -> Iterable[Metric]:
        for spec, health in ((m.DOCKER_DAEMON, view.docker_health), (m.CONTAINERD_DAEMON, view.containerd_health)):
            if health is not None:
                family = spec.family()
                family.add_metric([health], 1)
                yield family
