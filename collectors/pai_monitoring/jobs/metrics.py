"""The metric families of the ``jobs`` collector: the original job-exporter's task, service and health metrics,
plus the counters its final dashboards queried."""

from __future__ import annotations

from pai_monitoring.jobs.identity import TASK_LABELS
from pai_monitoring.runtime.metrics import MetricSpec, MetricType

TASK_GPU_LABELS = (*TASK_LABELS, "minor_number")
PER_CONTAINER_LABELS = (*TASK_LABELS, "container_id")
"""Cumulative values are exported per container (or Slurm job), each a counter of its own that never falls when
another container of the job exits; the recording rules add them up per job (docs/jobs.md)."""


def _task(name: str, kind: MetricType, text: str, labels: tuple[str, ...] = TASK_LABELS) -> MetricSpec:
    return MetricSpec(name, kind, text, labels)


TASK_CPU_PERCENT = _task(
    "task_cpu_percent",
    "gauge",
    "CPU use of the job's containers in percent of one core over the last collection interval (can exceed 100).",
)
TASK_CPU_SECONDS = _task(
    "task_cpu_seconds_total",
    "counter",
    "CPU time used by one container of the job (or the Slurm job) in seconds; sum without (container_id) per job.",
    PER_CONTAINER_LABELS,
)
TASK_MEM_USAGE = _task(
    "task_mem_usage_byte", "gauge", "Memory used by the job's containers in bytes (usage minus inactive file cache)."
)
TASK_MEM_LIMIT = _task(
    "task_mem_limit_byte",
    "gauge",
    "Memory limit of the job's containers in bytes; the host's total memory when a container has none.",
)
TASK_MEM_PERCENT = _task("task_mem_usage_percent", "gauge", "task_mem_usage_byte / task_mem_limit_byte x 100.")
TASK_BLOCK_IN = _task(
    "task_block_in_byte",
    "gauge",
    "Bytes one container of the job has read from block devices since it started (cumulative).",
    PER_CONTAINER_LABELS,
)
TASK_BLOCK_OUT = _task(
    "task_block_out_byte",
    "gauge",
    "Bytes one container of the job has written to block devices since it started (cumulative).",
    PER_CONTAINER_LABELS,
)
TASK_NET_IN = _task(
    "task_net_in_byte",
    "gauge",
    "Bytes per second received by the job's own network namespace over the last interval (loopback excluded).",
)
TASK_NET_OUT = _task(
    "task_net_out_byte",
    "gauge",
    "Bytes per second sent by the job's own network namespace over the last interval (loopback excluded).",
)
TASK_NET_RX = _task(
    "task_network_receive_bytes_total",
    "counter",
    "Bytes received by a network namespace of the job, loopback excluded, under one of the containers in it; "
    "absent for host-network jobs.",
    PER_CONTAINER_LABELS,
)
TASK_NET_TX = _task(
    "task_network_transmit_bytes_total",
    "counter",
    "Bytes sent by a network namespace of the job, loopback excluded, under one of the containers in it; "
    "absent for host-network jobs.",
    PER_CONTAINER_LABELS,
)
TASK_GPU_PERCENT = _task(
    "task_gpu_percent",
    "gauge",
    "Utilisation of a GPU the job uses, in percent: the whole card's value, the same for every job sharing it.",
    TASK_GPU_LABELS,
)
TASK_GPU_MEM_PERCENT = _task(
    "task_gpu_mem_percent",
    "gauge",
    "Framebuffer use of a GPU the job uses, in percent of the card: the whole card's value.",
    TASK_GPU_LABELS,
)
TASK_GPU_MEMORY = _task(
    "task_gpu_memory_bytes",
    "gauge",
    "GPU memory in bytes held by the job's own processes on this GPU, as NVML reports per process.",
    TASK_GPU_LABELS,
)
TASK_GPU_SM_UTILIZATION = _task(
    "task_gpu_sm_utilization_ratio",
    "gauge",
    "Share of the GPU collector's interval in which the job's own processes ran kernels on this GPU (0-1), from "
    "NVML's per-process figures: on a GPU that jobs share, each job's own. Absent where the driver has no "
    "per-process figures (MIG mode).",
    TASK_GPU_LABELS,
)
TASK_GPU_MEMORY_UTILIZATION = _task(
    "task_gpu_memory_utilization_ratio",
    "gauge",
    "Share of the interval in which the job's own processes read or wrote this GPU's memory (0-1), as for the SM "
    "figure.",
    TASK_GPU_LABELS,
)
TASK_GPU_ENERGY = _task(
    "task_gpu_energy_joules_total",
    "counter",
    "GPU energy attributed to the job since this exporter first saw it on the GPU, in joules: the GPU's energy of "
    "each interval split between the jobs holding it by their SM utilisation, equally when none ran kernels or the "
    "driver has no per-process figures.",
    TASK_GPU_LABELS,
)
TASK_INFO = MetricSpec(
    "task_info",
    "gauge",
    "One series per container or Slurm job of a job: runtime, container id, Kubernetes pod, Slurm account and "
    "partition, value 1.",
    (
        *TASK_LABELS,
        "runtime",
        "container_id",
        "pod_name",
        "namespace",
        "container",
        "qos_class",
        "account",
        "partition",
    ),
)

SERVICE_LABELS = ("name",)
SERVICE_CPU_PERCENT = MetricSpec(
    "service_cpu_percent",
    "gauge",
    "CPU use of a service in percent of one core over the last interval.",
    SERVICE_LABELS,
)
SERVICE_MEM_USAGE = MetricSpec("service_mem_usage_byte", "gauge", "Memory used by a service in bytes.", SERVICE_LABELS)
SERVICE_MEM_LIMIT = MetricSpec(
    "service_mem_limit_byte", "gauge", "Memory limit of a service in bytes (host total when none).", SERVICE_LABELS
)
SERVICE_MEM_PERCENT = MetricSpec(
    "service_mem_usage_percent", "gauge", "service_mem_usage_byte / service_mem_limit_byte x 100.", SERVICE_LABELS
)
SERVICE_NET_IN = MetricSpec(
    "service_net_in_byte", "gauge", "Bytes per second received by a service's own network namespace.", SERVICE_LABELS
)
SERVICE_NET_OUT = MetricSpec(
    "service_net_out_byte", "gauge", "Bytes per second sent by a service's own network namespace.", SERVICE_LABELS
)
SERVICE_BLOCK_IN = MetricSpec(
    "service_block_in_byte", "gauge", "Bytes a service has read from block devices.", SERVICE_LABELS
)
SERVICE_BLOCK_OUT = MetricSpec(
    "service_block_out_byte", "gauge", "Bytes a service has written to block devices.", SERVICE_LABELS
)

GPU_EXTERNAL = MetricSpec(
    "gpu_used_by_external_process_count",
    "gauge",
    "1 for each GPU and process where NVML lists the process on the GPU and its cgroup (/proc/<pid>/cgroup) lies in "
    "no container, Slurm job or listed service the jobs collector recognises (docs/jobs.md).",
    ("minor_number", "pid", "node_name", "index", "uuid"),
)
GPU_ZOMBIE = MetricSpec(
    "gpu_used_by_zombie_container_count",
    "gauge",
    "1 for each GPU and container (or Slurm job) where a process NVML lists on the GPU lies in the unit's cgroup "
    "while its runtime reports it stopped or no longer lists it, or no slurmstepd of the Slurm job is left; a "
    "runtime that cannot be asked marks nothing (docs/jobs.md).",
    ("minor_number", "container_id", "node_name", "index", "uuid", "runtime", "username", "job_name"),
)
ZOMBIE_CONTAINER = MetricSpec(
    "zombie_container_count",
    "gauge",
    "1 for each container or Slurm job whose cgroup still holds processes although its runtime reports it stopped "
    'or no longer lists it, or no slurmstepd of the Slurm job is left (type="residual_job": what remains of a job '
    "that has ended); the original's log-scraping type job_exit_hangs is not produced (docs/jobs.md).",
    ("type", "node_name", "runtime", "container_id", "username", "job_name"),
)
DOCKER_DAEMON = MetricSpec(
    "docker_daemon_count",
    "gauge",
    'Always 1 while the docker socket exists; error="ok" when the daemon answered /_ping within the timeout.',
    ("error",),
)
CONTAINERD_DAEMON = MetricSpec(
    "containerd_daemon_count",
    "gauge",
    'Always 1 while the containerd socket exists; error="ok" when it accepted a connection within the timeout.',
    ("error",),
)

TASK_SPECS = (
    TASK_CPU_PERCENT,
    TASK_CPU_SECONDS,
    TASK_MEM_USAGE,
    TASK_MEM_LIMIT,
    TASK_MEM_PERCENT,
    TASK_BLOCK_IN,
    TASK_BLOCK_OUT,
    TASK_NET_IN,
    TASK_NET_OUT,
    TASK_NET_RX,
    TASK_NET_TX,
)
GPU_SPECS = (
    TASK_GPU_PERCENT,
    TASK_GPU_MEM_PERCENT,
    TASK_GPU_MEMORY,
    TASK_GPU_SM_UTILIZATION,
    TASK_GPU_MEMORY_UTILIZATION,
    TASK_GPU_ENERGY,
    GPU_EXTERNAL,
    GPU_ZOMBIE,
)
SERVICE_SPECS = (
    SERVICE_CPU_PERCENT,
    SERVICE_MEM_USAGE,
    SERVICE_MEM_LIMIT,
    SERVICE_MEM_PERCENT,
    SERVICE_NET_IN,
    SERVICE_NET_OUT,
    SERVICE_BLOCK_IN,
    SERVICE_BLOCK_OUT,
)
ALL_SPECS = (
    *TASK_SPECS,
    TASK_INFO,
    *GPU_SPECS,
    ZOMBIE_CONTAINER,
    *SERVICE_SPECS,
    DOCKER_DAEMON,
    CONTAINERD_DAEMON,
)
