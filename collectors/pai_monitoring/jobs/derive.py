"""Every value the jobs collector exports, worked out from what the kernel, the runtimes and NVML said this cycle.

This is the only module that computes: :mod:`.kernel` reads raw figures, :mod:`.identity` names units, and here
those become series. One memory figure, for example, goes: ``memory.current`` (v2) or ``memory.usage_in_bytes``
(v1) and the inactive page cache from ``memory.stat`` are read into :class:`~.kernel.CgroupCounters`;
:func:`working_set` subtracts the cache; the units of one job are added up in :meth:`_Families.add_job`, and the
sum is ``task_mem_usage_byte``.

Cumulative values (CPU seconds, block and network bytes) are exported per container, labelled ``container_id``:
each is one kernel counter, so a series never falls when another container of the job exits, and the recording
rules (``rules/recording/jobs.rules.yml``) add them up per job. Instantaneous values (memory, rates, percentages)
are summed per job as the original job-exporter reported them. Rates need two samples: a unit's first cycle
gives none, and a job's rate is absent until all its units have one (a partial sum would be a wrong figure).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from pai_monitoring.jobs import metrics as m
from pai_monitoring.jobs.identity import TASK_LABELS, UNKNOWN, JobIdentity, KubeMeta, SlurmJob
from pai_monitoring.jobs.kernel import CgroupCounters
from pai_monitoring.jobs.layouts import Unit
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.shared_model import GpuDevice, GpuProcess, GpuState

RESIDUAL_JOB = "residual_job"


@dataclass(slots=True)
class Observation:
    """One unit in one cycle: what was read about it, before anything is computed."""

    unit: Unit
    container_id: str
    """The container id, or the Slurm job id."""
    runtime: str
    identity: JobIdentity | None
    service: str | None
    kube: KubeMeta | None
    slurm: SlurmJob | None
    counters: CgroupCounters
    netns: str | None
    """The unit's own network namespace; ``None`` for host networking."""
    net_bytes: tuple[int, int] | None
    """Received and sent bytes of that namespace."""
    gpus: frozenset[str]
    """Minor numbers of the GPUs the unit uses (:func:`.gpu_attribution.unit_gpus`)."""
    gpu_processes: tuple[GpuProcess, ...]


@dataclass(frozen=True)
class Zombie:
    """A unit whose runtime (or Slurm) says it has ended while its cgroup still holds processes."""

    unit: Unit
    container_id: str
    runtime: str
    identity: JobIdentity | None
    gpu_processes: tuple[GpuProcess, ...]


# ---- single values ----


def working_set(c: CgroupCounters) -> int | None:
    """Memory in use minus reclaimable page cache, as ``docker stats`` (the original's source) reports it."""
    if c.memory_usage is None:
        return None
    return max(0, c.memory_usage - (c.inactive_file or 0))


def memory_limit(limits: list[int | None], mem_total: int | None) -> float | None:
    """The units' limits added up, or the host's memory when one of them has none (what ``docker stats`` shows
    for a container without a limit)."""
    return mem_total if None in limits else _sum(limits)


def percent(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else part / whole * 100


JobKey = tuple[str, ...]
"""A job's task labels, in :data:`~.identity.TASK_LABELS` order."""


def job_gpu_utilization(group: list[Observation], minor: str, sm: bool = True) -> float | None:
    """The utilisation (percent) of a job's own processes on one GPU, SM or memory: the sum of NVML's per-process
    figures; 0 without a process there; ``None`` when the driver gives no figure for one of them (MIG mode)."""
    total = 0.0
    for process in (p for o in group for p in o.gpu_processes if p.minor_number == minor):
        figure = process.sm_utilization_percent if sm else process.memory_utilization_percent
        if figure is None:
            return None
        total += figure
    return total


def gpu_shares(holders: dict[JobKey, float | None]) -> dict[JobKey, float]:
    """How the jobs holding one GPU share it: by their SM utilisation, equally when none ran kernels or one of the
    figures is unknown (holding an idle GPU costs its idle power, whoever holds it)."""
    figures = list(holders.values())
    known = [f for f in figures if f is not None]
    total = sum(known)
    if len(known) == len(figures) and total > 0:
        return {key: (figure or 0.0) / total for key, figure in holders.items()}
    return {key: 1 / len(holders) for key in holders}


class Rates:
    """The previous cycle's samples of the values the original exported as rates (CPU percent, network bytes per
    second), and of each GPU's energy with the joules given to each job: the one place that remembers anything
    between cycles."""

    def __init__(self) -> None:
        self._cpu: dict[str, tuple[float, float]] = {}
        self._net: dict[str, tuple[float, int, int]] = {}
        self._gpu_energy: dict[str, float] = {}
        self._job_joules: dict[tuple[JobKey, str], float] = {}

    def gpu_energy(self, groups: dict[JobKey, list[Observation]], state: GpuState) -> dict[tuple[JobKey, str], float]:
        """Joules given to each job on each GPU it holds (by minor number), since it was first seen there: each
        GPU's energy since the previous cycle split by :func:`gpu_shares`. A counter that went back (the driver was
        reloaded) gives nothing for that interval; jobs and GPUs no longer seen are forgotten."""
        holders: dict[str, dict[JobKey, float | None]] = {}
        for key, group in groups.items():
            for minor in frozenset().union(*(o.gpus for o in group)):
                holders.setdefault(minor, {})[key] = job_gpu_utilization(group, minor)
        energy: dict[str, float] = {}
        joules: dict[tuple[JobKey, str], float] = {}
        for device in state.devices:
            if device.lost or device.energy_joules is None:
                continue
            ident = device.uuid or device.minor_number
            energy[ident] = device.energy_joules
            before = self._gpu_energy.get(ident)
            spent = device.energy_joules - before if before is not None and device.energy_joules >= before else 0.0
            for key, share in gpu_shares(holders.get(device.minor_number, {})).items():
                slot = (key, device.minor_number)
                joules[slot] = self._job_joules.get(slot, 0.0) + spent * share
        self._gpu_energy, self._job_joules = energy, joules
        return joules

    def cycle(
        self, observations: list[Observation], now: float
    ) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
        """CPU percent of one core per unit key and (rx, tx) bytes per second per network namespace, from the
        previous cycle to this one; the samples of this cycle replace the previous ones."""
        cpu: dict[str, float] = {}
        net: dict[str, tuple[float, float]] = {}
        cpu_now: dict[str, tuple[float, float]] = {}
        net_now: dict[str, tuple[float, int, int]] = {}
        for obs in observations:
            seconds = obs.counters.cpu_seconds
            if seconds is not None:
                key = obs.unit.key
                cpu_now[key] = (now, seconds)
                prev = self._cpu.get(key)
                if prev is not None and now > prev[0]:
                    cpu[key] = max(0.0, (seconds - prev[1]) / (now - prev[0]) * 100)
            if obs.netns is not None and obs.net_bytes is not None and obs.netns not in net_now:
                rx, tx = obs.net_bytes
                net_now[obs.netns] = (now, rx, tx)
                before = self._net.get(obs.netns)
                if before is not None and now > before[0]:
                    elapsed = now - before[0]
                    net[obs.netns] = (max(0, rx - before[1]) / elapsed, max(0, tx - before[2]) / elapsed)
        self._cpu, self._net = cpu_now, net_now
        return cpu, net


def _sum(values: Sequence[float | None]) -> float | None:
    """The sum, or ``None`` when any part is unknown (or there is none)."""
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total if values else None


# ---- families ----


@dataclass(frozen=True)
class _Specs:
    cpu_percent: MetricSpec
    mem_usage: MetricSpec
    mem_limit: MetricSpec
    mem_percent: MetricSpec
    net_in: MetricSpec
    net_out: MetricSpec
    block_in: MetricSpec
    block_out: MetricSpec


_TASK = _Specs(
    m.TASK_CPU_PERCENT,
    m.TASK_MEM_USAGE,
    m.TASK_MEM_LIMIT,
    m.TASK_MEM_PERCENT,
    m.TASK_NET_IN,
    m.TASK_NET_OUT,
    m.TASK_BLOCK_IN,
    m.TASK_BLOCK_OUT,
)
_SERVICE = _Specs(
    m.SERVICE_CPU_PERCENT,
    m.SERVICE_MEM_USAGE,
    m.SERVICE_MEM_LIMIT,
    m.SERVICE_MEM_PERCENT,
    m.SERVICE_NET_IN,
    m.SERVICE_NET_OUT,
    m.SERVICE_BLOCK_IN,
    m.SERVICE_BLOCK_OUT,
)


class _Families:
    """Families being filled; samples are appended directly (one label dict shared by a job's series, which
    ``add_metric`` would rebuild per series: it matters at a thousand containers)."""

    def __init__(self, specs: Iterable[MetricSpec]) -> None:
        self.by_name: dict[str, Metric] = {spec.name: spec.family() for spec in specs}

    def add(self, spec: MetricSpec, labels: dict[str, str], value: float | None) -> None:
        if value is not None:
            name = spec.name
            self.by_name[name].samples.append(Sample(name, labels, value, None, None))

    def add_job(
        self,
        specs: _Specs,
        labels: dict[str, str],
        group: list[Observation],
        cpu: dict[str, float],
        net: dict[str, tuple[float, float]],
        mem_total: int | None,
    ) -> None:
        """The instantaneous values of one job (or service): sums over its units."""
        memory = _sum([working_set(o.counters) for o in group])
        limit = memory_limit([o.counters.memory_limit for o in group], mem_total)
        self.add(specs.cpu_percent, labels, _sum([cpu.get(o.unit.key) for o in group]))
        self.add(specs.mem_usage, labels, memory)
        self.add(specs.mem_limit, labels, limit)
        self.add(specs.mem_percent, labels, percent(memory, limit))
        namespaces = {o.netns for o in group if o.netns is not None}
        if namespaces:
            rates = [net.get(ns) for ns in namespaces]
            self.add(specs.net_in, labels, _sum([r[0] if r else None for r in rates]))
            self.add(specs.net_out, labels, _sum([r[1] if r else None for r in rates]))

    def add_counters(self, labels: dict[str, str], group: list[Observation]) -> None:
        """The cumulative values of one job, one series per container (and per network namespace, under the
        first of the job's containers in it)."""
        seen_netns: set[str] = set()
        for obs in sorted(group, key=lambda o: o.container_id) if len(group) > 1 else group:
            own = {**labels, "container_id": obs.container_id}
            c = obs.counters
            self.add(m.TASK_CPU_SECONDS, own, c.cpu_seconds)
            self.add(m.TASK_BLOCK_IN, own, c.read_bytes)
            self.add(m.TASK_BLOCK_OUT, own, c.write_bytes)
            if obs.netns is not None and obs.net_bytes is not None and obs.netns not in seen_netns:
                seen_netns.add(obs.netns)
                self.add(m.TASK_NET_RX, own, obs.net_bytes[0])
                self.add(m.TASK_NET_TX, own, obs.net_bytes[1])

    def add_service_blocks(self, labels: dict[str, str], group: list[Observation]) -> None:
        self.add(m.SERVICE_BLOCK_IN, labels, _sum([o.counters.read_bytes for o in group]))
        self.add(m.SERVICE_BLOCK_OUT, labels, _sum([o.counters.write_bytes for o in group]))


def _task_info(obs: Observation, identity: JobIdentity) -> list[str]:
    kube = obs.kube or KubeMeta()
    slurm = obs.slurm
    return [
        *identity.labels(),
        obs.runtime,
        obs.container_id,
        kube.pod_name,
        kube.namespace,
        kube.container,
        obs.unit.qos_class or UNKNOWN,
        slurm.account if slurm else UNKNOWN,
        slurm.partition if slurm else UNKNOWN,
    ]


def _gpu_order(minor: str) -> tuple[int, str]:
    return len(minor), minor


def _ratio(percent: float | None) -> float | None:
    return None if percent is None else min(1.0, max(0.0, percent / 100))


def _job_gpus(
    groups: dict[JobKey, list[Observation]], state: GpuState, joules: dict[tuple[JobKey, str], float]
) -> Iterator[Metric]:
    """``task_gpu_*``: per job and GPU, the card's utilisation and memory use, the memory and utilisation of the
    job's own processes on it, and the GPU energy given to the job."""
    busy = m.TASK_GPU_PERCENT.family()
    mem_percent = m.TASK_GPU_MEM_PERCENT.family()
    memory = m.TASK_GPU_MEMORY.family()
    sm_share = m.TASK_GPU_SM_UTILIZATION.family()
    memory_share = m.TASK_GPU_MEMORY_UTILIZATION.family()
    energy = m.TASK_GPU_ENERGY.family()
    devices = {d.minor_number: d for d in state.devices}
    for labels, group in groups.items():
        for minor in sorted(frozenset().union(*(o.gpus for o in group)), key=_gpu_order):
            device = devices[minor]
            row = [*labels, minor]
            if device.utilization_gpu_percent is not None:
                busy.add_metric(row, device.utilization_gpu_percent)
            if device.memory_used_percent is not None:
                mem_percent.add_metric(row, device.memory_used_percent)
            held = (p.used_memory_bytes or 0 for o in group for p in o.gpu_processes if p.minor_number == minor)
            memory.add_metric(row, sum(held))
            for family, sm in ((sm_share, True), (memory_share, False)):
                share = _ratio(job_gpu_utilization(group, minor, sm))
                if share is not None:
                    family.add_metric(row, share)
            if (labels, minor) in joules:
                energy.add_metric(row, joules[(labels, minor)])
    yield from (busy, mem_percent, memory, sm_share, memory_share, energy)


def jobs(
    observations: list[Observation],
    rates: Rates,
    now: float,
    mem_total: int | None,
    gpu_state: GpuState | None,
) -> Iterator[Metric]:
    """The ``task_*``, ``task_info`` and ``service_*`` families (and ``task_gpu_*`` with fresh GPU data)."""
    cpu, net = rates.cycle(observations, now)
    tasks: dict[JobKey, list[Observation]] = {}
    services: dict[str, list[Observation]] = {}
    info = m.TASK_INFO.family()
    for obs in observations:
        if obs.service is not None and obs.unit.kind != "slurm":
            services.setdefault(obs.service, []).append(obs)
        elif obs.identity is not None:
            tasks.setdefault(obs.identity.labels(), []).append(obs)
            info.add_metric(_task_info(obs, obs.identity), 1)
    task_families = _Families(m.TASK_SPECS)
    for key, group in tasks.items():
        labels = dict(zip(TASK_LABELS, key, strict=True))
        task_families.add_job(_TASK, labels, group, cpu, net, mem_total)
        task_families.add_counters(labels, group)
    service_families = _Families(m.SERVICE_SPECS)
    for name, group in services.items():
        labels = {"name": name}
        service_families.add_job(_SERVICE, labels, group, cpu, net, mem_total)
        service_families.add_service_blocks(labels, group)
    yield from task_families.by_name.values()
    yield info
    if gpu_state is not None:
        yield from _job_gpus(tasks, gpu_state, rates.gpu_energy(tasks, gpu_state))
    yield from service_families.by_name.values()


def _gpu_labels(node_name: str, device: GpuDevice | None) -> list[str]:
    """``node_name``, ``index``, ``uuid`` of a GPU (empty when the GPU collector does not list it)."""
    return [node_name, str(device.index) if device else "", device.uuid if device else ""]


def health(
    node_name: str,
    zombies: list[Zombie],
    external: list[GpuProcess],
    gpu_state: GpuState | None,
) -> Iterator[Metric]:
    """What has outlived its job: ``zombie_container_count`` always, and with fresh GPU data the processes that
    hold a GPU outside any job (``gpu_used_by_external_process_count``) or inside one that has ended
    (``gpu_used_by_zombie_container_count``)."""
    residual = m.ZOMBIE_CONTAINER.family()
    for z in sorted(zombies, key=lambda z: z.container_id):
        who = z.identity or JobIdentity()
        residual.add_metric([RESIDUAL_JOB, node_name, z.runtime, z.container_id, who.username, who.job_name], 1)
    yield residual
    if gpu_state is None:
        return
    devices = {d.minor_number: d for d in gpu_state.devices}
    outside = m.GPU_EXTERNAL.family()
    for process in sorted(external, key=lambda p: (_gpu_order(p.minor_number), p.pid)):
        device = devices.get(process.minor_number)
        outside.add_metric([process.minor_number, str(process.pid), *_gpu_labels(node_name, device)], 1)
    held = m.GPU_ZOMBIE.family()
    rows: set[tuple[str, ...]] = set()
    for z in zombies:
        who = z.identity or JobIdentity()
        for process in z.gpu_processes:
            device = devices.get(process.minor_number)
            rows.add(
                (
                    process.minor_number,
                    z.container_id,
                    *_gpu_labels(node_name, device),
                    z.runtime,
                    who.username,
                    who.job_name,
                )
            )
    for row in sorted(rows):
        held.add_metric(list(row), 1)
    yield outside
    yield held
