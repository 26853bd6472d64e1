"""Adding up the units of one job (or one service) into the metric families.

Several containers can carry one job identity (a Kubernetes pod's containers, a task restarted while its old
container lingers); their usage is summed so that each label set appears once. Network counters are summed per
distinct network namespace, so containers sharing a pod's namespace are not counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from pai_monitoring.jobs import metrics as m
from pai_monitoring.jobs.cgroups import Unit
from pai_monitoring.jobs.identity import TASK_LABELS, UNKNOWN, JobIdentity, KubeMeta
from pai_monitoring.jobs.stats import CgroupSample
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.shared_model import GpuState


@dataclass(frozen=True)
class Observation:
    """One unit in one cycle."""

    unit: Unit
    runtime: str
    identity: JobIdentity | None
    service: str | None
    kube: KubeMeta | None
    stats: CgroupSample
    cpu_percent: float | None
    netns: str | None
    net_total: tuple[int, int] | None
    net_rate: tuple[float, float] | None
    gpu_minors: frozenset[str]
    gpu_memory: dict[str, int]
    gpu_state: GpuState | None


@dataclass(frozen=True)
class _Specs:
    cpu_percent: MetricSpec
    mem_usage: MetricSpec
    mem_limit: MetricSpec
    mem_percent: MetricSpec
    block_in: MetricSpec
    block_out: MetricSpec
    net_in: MetricSpec
    net_out: MetricSpec
    cpu_seconds: MetricSpec | None = None
    net_rx: MetricSpec | None = None
    net_tx: MetricSpec | None = None


_TASK = _Specs(
    m.TASK_CPU_PERCENT,
    m.TASK_MEM_USAGE,
    m.TASK_MEM_LIMIT,
    m.TASK_MEM_PERCENT,
    m.TASK_BLOCK_IN,
    m.TASK_BLOCK_OUT,
    m.TASK_NET_IN,
    m.TASK_NET_OUT,
    m.TASK_CPU_SECONDS,
    m.TASK_NET_RX,
    m.TASK_NET_TX,
)
_SERVICE = _Specs(
    m.SERVICE_CPU_PERCENT,
    m.SERVICE_MEM_USAGE,
    m.SERVICE_MEM_LIMIT,
    m.SERVICE_MEM_PERCENT,
    m.SERVICE_BLOCK_IN,
    m.SERVICE_BLOCK_OUT,
    m.SERVICE_NET_IN,
    m.SERVICE_NET_OUT,
)


def _sum(values: list[int | None] | list[float | None]) -> float | None:
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total if values else None


class _Families:
    def __init__(self, specs: _Specs) -> None:
        self.specs = specs
        self.by_name = {
            spec.name: spec.family()
            for spec in (getattr(specs, f) for f in specs.__dataclass_fields__)
            if spec is not None
        }

    def add(self, spec: MetricSpec | None, labels: dict[str, str], value: float | None) -> None:
        # Appending the sample directly is what add_metric does, minus building the label dict per metric: one
        # dict per job is shared by its series (nothing mutates it), which matters at a thousand containers.
        if spec is not None and value is not None:
            self.by_name[spec.name].samples.append(Sample(spec.name, labels, value, None, None))

    def add_group(self, labels: dict[str, str], group: list[Observation], mem_total: int | None) -> None:
        specs = self.specs
        memory: float | None
        limit: float | None
        read: float | None
        write: float | None
        if len(group) == 1:
            only = group[0]
            stats = only.stats
            cpu_seconds, cpu_percent = stats.cpu_seconds, only.cpu_percent
            memory, read, write = stats.memory_bytes, stats.read_bytes, stats.write_bytes
            limit = stats.memory_limit_bytes if stats.memory_limit_bytes is not None else mem_total
            own = [only] if only.netns is not None else []
        else:
            samples = [o.stats for o in group]
            cpu_seconds = _sum([s.cpu_seconds for s in samples])
            cpu_percent = _sum([o.cpu_percent for o in group])
            memory = _sum([s.memory_bytes for s in samples])
            limits = [s.memory_limit_bytes for s in samples]
            limit = mem_total if mem_total is not None and None in limits else _sum(limits)
            read = _sum([s.read_bytes for s in samples])
            write = _sum([s.write_bytes for s in samples])
            own = list({o.netns: o for o in group if o.netns is not None}.values())
        self.add(specs.cpu_seconds, labels, cpu_seconds)
        self.add(specs.cpu_percent, labels, cpu_percent)
        self.add(specs.mem_usage, labels, memory)
        self.add(specs.mem_limit, labels, limit)
        if memory is not None and limit:
            self.add(specs.mem_percent, labels, memory / limit * 100)
        self.add(specs.block_in, labels, read)
        self.add(specs.block_out, labels, write)
        if own:
            self.add(specs.net_rx, labels, _sum([o.net_total[0] if o.net_total else None for o in own]))
            self.add(specs.net_tx, labels, _sum([o.net_total[1] if o.net_total else None for o in own]))
            self.add(specs.net_in, labels, _sum([o.net_rate[0] if o.net_rate else None for o in own]))
            self.add(specs.net_out, labels, _sum([o.net_rate[1] if o.net_rate else None for o in own]))

    def families(self) -> Iterator[Metric]:
        yield from self.by_name.values()


def _gpu_families(groups: dict[tuple[str, ...], list[Observation]]) -> Iterator[Metric]:
    percent = m.TASK_GPU_PERCENT.family()
    mem_percent = m.TASK_GPU_MEM_PERCENT.family()
    memory = m.TASK_GPU_MEMORY.family()
    for labels, group in groups.items():
        state = group[0].gpu_state
        if state is None:
            continue
        devices = {d.minor_number: d for d in state.devices}
        for minor in sorted(frozenset().union(*(o.gpu_minors for o in group)), key=lambda v: (len(v), v)):
            device = devices[minor]
            row = [*labels, minor]
            if device.utilization_gpu_percent is not None:
                percent.add_metric(row, device.utilization_gpu_percent)
            if device.memory_used_percent is not None:
                mem_percent.add_metric(row, device.memory_used_percent)
            memory.add_metric(row, sum(o.gpu_memory.get(minor, 0) for o in group))
    yield from (percent, mem_percent, memory)


def aggregate(observations: Iterable[Observation], mem_total: int | None, gpu: bool) -> Iterator[Metric]:
    """The task, task_info and service families for one cycle's observations."""
    tasks: dict[tuple[str, ...], list[Observation]] = {}
    services: dict[str, list[Observation]] = {}
    info = m.TASK_INFO.family()
    for obs in observations:
        if obs.service is not None and obs.unit.kind != "slurm":
            services.setdefault(obs.service, []).append(obs)
        elif obs.identity is not None:
            tasks.setdefault(obs.identity.labels(), []).append(obs)
            kube = obs.kube or KubeMeta()
            info.add_metric(
                [
                    *obs.identity.labels(),
                    obs.runtime,
                    obs.unit.ident,
                    kube.pod_name,
                    kube.namespace,
                    kube.container,
                    obs.unit.qos_class or UNKNOWN,
                ],
                1,
            )
    task_families = _Families(_TASK)
    for labels, group in tasks.items():
        task_families.add_group(dict(zip(TASK_LABELS, labels, strict=True)), group, mem_total)
    service_families = _Families(_SERVICE)
    for name, group in services.items():
        service_families.add_group({"name": name}, group, mem_total)
    yield from task_families.families()
    yield info
    if gpu:
        yield from _gpu_families(tasks)
    yield from service_families.families()
