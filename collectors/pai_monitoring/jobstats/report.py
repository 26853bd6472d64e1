"""A job's use of what it held, from Prometheus: the figures, and hints in plain language.

:func:`gather` asks Prometheus (a fixed number of instant queries, see :mod:`.queries`); :func:`hints` turns the
figures into sentences a researcher can act on and is pure, so its thresholds are tested without Prometheus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from pai_monitoring.jobstats import queries
from pai_monitoring.jobstats.prometheus import Prometheus

IDLE_SHARE = 0.5
"""A GPU idle (utilisation under 1 %) for at least this share of the job counts as not used."""
WHOLE_JOB = 0.995
BUSY_UTILIZATION = 50.0
FEW_SMS = 0.3
TENSOR_UNUSED = 0.05
GPU_MEMORY_FULL = 0.95
GPU_MEMORY_SMALL = 0.25
HOST_MEMORY_FULL = 0.9
CPU_EFFICIENCY_LOW = 0.25
MAX_GPUS = 1024


class UnknownJob(Exception):
    """Prometheus has no job, pod or Slurm job of that name in the lookback window."""


@dataclass(frozen=True)
class Job:
    """A job found in Prometheus: how its series are selected, and when it ran."""

    ident: str
    job_name: str
    username: str
    task_selector: str
    nodes: tuple[str, ...]
    tasks: int
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class GpuUse:
    instance: str
    minor_number: str
    node_name: str = ""
    index: str = ""
    uuid: str = ""
    model: str = ""
    utilization_percent: float | None = None
    """The card's utilisation (all jobs on it)."""
    card_idle_share: float | None = None
    own_use: float | None = None
    """Share of the time the job's own processes ran kernels on the GPU (NVML's per-process figures)."""
    own_idle_share: float | None = None
    sm_active: float | None = None
    tensor_active: float | None = None
    memory_peak_bytes: float | None = None
    memory_total_bytes: float | None = None
    card_energy_joules: float | None = None
    own_energy_joules: float | None = None
    """The job's share of the GPU's energy (``task_gpu_energy_joules_total``)."""

    @property
    def name(self) -> str:
        return f"GPU {self.index or self.minor_number} of {self.node_name or self.instance}"

    @property
    def idle_share(self) -> float | None:
        """How long the job left the GPU idle: from its own processes' figures where the driver has them (so a GPU
        another job keeps busy can still be idle for this one), else from the card's utilisation."""
        return self.own_idle_share if self.own_idle_share is not None else self.card_idle_share

    @property
    def energy_joules(self) -> float | None:
        """The job's share of the GPU's energy where the exporter gives one, else the whole GPU's."""
        return self.own_energy_joules if self.own_energy_joules is not None else self.card_energy_joules

    @property
    def idle(self) -> bool:
        return self.idle_share is not None and self.idle_share >= IDLE_SHARE


@dataclass(frozen=True)
class Report:
    job: Job
    gpus: tuple[GpuUse, ...]
    cpu_core_seconds: float | None
    cpu_peak_cores: float | None
    cpus: float | None
    """The CPU cores the job was given, where the caller said (``--cpus``)."""
    host_memory_peak_bytes: float | None
    host_memory_limit_bytes: float | None
    hints: tuple[str, ...] = field(default=())

    @property
    def cpu_mean_cores(self) -> float | None:
        if self.cpu_core_seconds is None or self.job.seconds <= 0:
            return None
        return self.cpu_core_seconds / self.job.seconds

    @property
    def cpu_efficiency(self) -> float | None:
        mean = self.cpu_mean_cores
        return mean / self.cpus if mean is not None and self.cpus else None

    @property
    def gpus_used(self) -> int:
        return sum(1 for gpu in self.gpus if not gpu.idle)

    @property
    def gpu_energy_joules(self) -> float | None:
        known = [gpu.energy_joules for gpu in self.gpus if gpu.energy_joules is not None]
        return sum(known) if known else None

    @property
    def energy_is_share(self) -> bool:
        """True when every GPU's energy is the job's own share, not the whole GPU's."""
        return bool(self.gpus) and all(gpu.own_energy_joules is not None for gpu in self.gpus)


def duration(seconds: float) -> str:
    """A PromQL duration of whole seconds, at least one."""
    return f"{max(1, math.ceil(seconds))}s"


def find(prom: Prometheus, ident: str, now: float, lookback: str, step: str) -> Job:
    for matchers in queries.candidates(ident):
        found = prom.query(queries.tasks(matchers, lookback), now)
        if not found:
            continue
        first = prom.value(queries.first_seen(matchers, lookback, step), now)
        last = prom.value(queries.last_seen(matchers, lookback, step), now)
        if first is None or last is None:
            continue
        labels = found[0].labels
        if "job_name" in matchers:
            task = queries.selector({"job_name": labels.get("job_name", ident)})
        else:  # one pod: its task of its job on its node
            task = queries.selector({k: labels.get(k, "") for k in ("instance", *queries.JOB_LABELS)})
        return Job(
            ident=ident,
            job_name=labels.get("job_name", ident),
            username=labels.get("username", ""),
            task_selector=task,
            nodes=tuple(sorted({s.labels.get("instance", "") for s in found})),
            tasks=len(found),
            start=first,
            end=last,
        )
    raise UnknownJob(ident)


def _by_gpu(prom: Prometheus, expr: str, at: float) -> dict[tuple[str, str], tuple[dict[str, str], float]]:
    return {
        (s.labels.get("instance", ""), s.labels.get("minor_number", "")): (s.labels, s.value)
        for s in prom.query(expr, at)
        if math.isfinite(s.value)
    }


def gather(prom: Prometheus, job: Job, step: str, step_seconds: float, cpus: float | None = None) -> Report:
    # The window reaches one step before the first sight, so the first samples are inside it.
    window = duration(job.seconds + step_seconds)
    figures = queries.per_gpu(job.task_selector, window)
    held = sorted(_by_gpu(prom, figures["held"], job.end))[:MAX_GPUS]
    values = {name: _by_gpu(prom, expr, job.end) for name, expr in figures.items() if name != "held"}
    gpus = []
    for key in held:
        info = values["info"].get(key, ({}, 0.0))[0]

        def figure(name: str, key: tuple[str, str] = key) -> float | None:
            found = values[name].get(key)
            return found[1] if found is not None else None

        gpus.append(
            GpuUse(
                instance=key[0],
                minor_number=key[1],
                node_name=info.get("node_name", ""),
                index=info.get("index", ""),
                uuid=info.get("uuid", ""),
                model=info.get("model", ""),
                utilization_percent=figure("utilization"),
                card_idle_share=figure("idle_share"),
                own_use=figure("own_sm"),
                own_idle_share=figure("own_idle_share"),
                sm_active=figure("sm_active"),
                tensor_active=figure("tensor_active"),
                memory_peak_bytes=figure("memory_peak"),
                memory_total_bytes=figure("memory_total"),
                card_energy_joules=figure("energy"),
                own_energy_joules=figure("own_energy"),
            )
        )
    totals = {
        name: prom.value(expr, job.end) for name, expr in queries.per_job(job.task_selector, window, step).items()
    }
    peak_percent = totals["cpu_peak_percent"]
    report = Report(
        job=job,
        gpus=tuple(gpus),
        cpu_core_seconds=totals["cpu_seconds"],
        cpu_peak_cores=peak_percent / 100 if peak_percent is not None else None,
        cpus=cpus,
        host_memory_peak_bytes=totals["memory_peak"],
        host_memory_limit_bytes=totals["memory_limit"],
    )
    return replace(report, hints=tuple(hints(report)))


def _percent(share: float) -> str:
    return f"{round(share * 100)} %"


def hints(report: Report) -> list[str]:
    """What a researcher could change, in plain language, from the figures alone."""
    found: list[str] = []
    gpus = report.gpus
    idle = [gpu for gpu in gpus if gpu.idle]
    if idle:
        least = min(gpu.idle_share or 0.0 for gpu in idle)
        if len(gpus) == 1:
            who = "The job's GPU was"
        elif len(idle) == len(gpus):
            who = f"All {len(gpus)} GPUs were"
        else:
            who = f"{len(idle)} of {len(gpus)} GPUs {'was' if len(idle) == 1 else 'were'}"
        span = "the whole job" if least >= WHOLE_JOB else f"at least {_percent(least)} of the job"
        advice = (
            "the job may hang, or never use its GPUs"
            if len(idle) == len(gpus)
            else "ask for fewer GPUs, or check that the job spreads its work over all of them"
        )
        found.append(f"{who} idle for {span}: {advice}.")
    for gpu in gpus:
        if gpu.idle:
            continue
        util, sm, tensor = gpu.utilization_percent, gpu.sm_active, gpu.tensor_active
        if util is not None and sm is not None and util >= BUSY_UTILIZATION and sm < FEW_SMS:
            found.append(
                f"{gpu.name} ran kernels {round(util)} % of the time but only {_percent(sm)} of its SMs worked: "
                "its kernels are small for it (a larger batch helps) or it waits on data between them."
            )
        elif sm is not None and tensor is not None and sm >= FEW_SMS and tensor < TENSOR_UNUSED:
            found.append(
                f"{gpu.name} kept its SMs busy but its tensor cores idle: mixed precision (BF16, FP16 or TF32) would "
                "use them."
            )
    shares = [
        (gpu, gpu.memory_peak_bytes / gpu.memory_total_bytes)
        for gpu in gpus
        if gpu.memory_peak_bytes is not None and gpu.memory_total_bytes
    ]
    full = [(gpu, share) for gpu, share in shares if share >= GPU_MEMORY_FULL]
    if full:
        gpu, share = max(full, key=lambda item: item[1])
        found.append(f"GPU memory peaked at {_percent(share)} of {gpu.name}: the job is close to running out.")
    elif shares and all(share < GPU_MEMORY_SMALL for _, share in shares) and any(share > 0 for _, share in shares):
        most = max(share for _, share in shares)
        found.append(
            f"The job used at most {_percent(most)} of its GPUs' memory: a smaller GPU or a MIG slice would do."
        )
    peak, limit = report.host_memory_peak_bytes, report.host_memory_limit_bytes
    if peak is not None and limit and peak / limit >= HOST_MEMORY_FULL:
        found.append(
            f"Host memory peaked at {_percent(peak / limit)} of the limit: the job is close to being killed for "
            "running out."
        )
    efficiency, mean = report.cpu_efficiency, report.cpu_mean_cores
    if efficiency is not None and mean is not None and report.cpus and efficiency < CPU_EFFICIENCY_LOW:
        found.append(
            f"The job kept {mean:.1f} of its {report.cpus:g} CPU cores busy on average ({_percent(efficiency)}): "
            "it could ask for fewer."
        )
    return found
