"""The ``gpu`` collector: NVML snapshots from a supervised worker turned into metrics and a shared ``GpuState``.

A collection in which NVML fails (missing library or driver, an error, a call that hangs past the deadline) is not
a failed collection: it reports the failure as ``pai_gpu_nvml_status`` with the collector's health families
(worker restarts, timeouts, last success), so that these stay exported, and the alerts on them can fire, while no
GPU can be read. Only an unexpected error of the collector itself fails the iteration.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from prometheus_client.metrics_core import Metric

from pai_monitoring.gpu.families import BuildInput, Health, gpu_families, health_families, memory_used_percent
from pai_monitoring.gpu.metrics import ALL_SPECS
from pai_monitoring.gpu.model import DeviceReading, NvmlStatus, Snapshot
from pai_monitoring.gpu.profiling_families import ratio
from pai_monitoring.gpu.supervisor import WorkerFailed, WorkerSupervisor
from pai_monitoring.gpu.xid import XidLedger
from pai_monitoring.runtime.collector import Collector, CollectorContext, CollectorOptions
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.shared_model import GPU_STATE, GpuDevice, GpuProcess, GpuState

log = logging.getLogger(__name__)

# Idle data-centre GPUs show no memory in use once the driver's reserved memory is left out (nvidia-smi "0MiB" on an
# idle A100 or H100), while a CUDA context left behind holds a few hundred MiB: 256 MiB lies between the two.
DEFAULT_MEMORY_LEAK_THRESHOLD_BYTES = 256 * 1024 * 1024
DEFAULT_LIBRARY_RETRY_ITERATIONS = 10
ABSENT_STATUSES: frozenset[NvmlStatus] = frozenset({"library_not_found", "driver_not_loaded"})
MIN_WORKER_DEADLINE_SECONDS = 0.1
DEADLINE_MARGIN_SECONDS = 1.0
NO_PERMISSION_HINT = (
    "check the exporter's device access: its unit's DeviceAllow= (systemctl show pai-job-exporter -p DeviceAllow), "
    "the mode of the device node, a container's device cgroup"
)
OTHER_ERROR_HINT = "check nvidia-smi -i <index> and dmesg on the node"


@dataclass(frozen=True)
class GpuOptions(CollectorOptions):
    memory_leak_threshold_bytes: int = field(
        default=DEFAULT_MEMORY_LEAK_THRESHOLD_BYTES,
        metadata={
            "help": "GPU memory in use (bytes, driver-reserved memory excluded) above which a GPU that no process "
            "holds counts as leaking (nvidiasmi_memory_leak_count)."
        },
    )
    required: bool = field(
        default=False,
        metadata={
            "help": "This node must have GPUs (pai_gpu_required 1): a missing NVML library, driver or GPU pages. "
            "The job_exporter role sets it on the hosts of its GPU node groups."
        },
    )
    configured_count: int | None = field(
        default=None,
        metadata={"help": "Number of GPUs this node should have (configured_gpu_count); wins over the file."},
    )
    configuration_file: Path | None = field(
        default=None,
        metadata={
            "help": 'JSON file like OpenPAI\'s gpu-configuration.json: {"nodes": {"<node name>": {"gpuCount": N}}}.'
        },
    )
    library_retry_iterations: int = field(
        default=DEFAULT_LIBRARY_RETRY_ITERATIONS,
        metadata={"help": "When NVML or the driver is missing, try loading it again every this many iterations."},
    )

    def validate(self) -> None:
        super().validate()
        if self.memory_leak_threshold_bytes < 0:
            raise ConfigError("memory_leak_threshold_bytes", "must be >= 0")
        if self.configured_count is not None and self.configured_count < 0:
            raise ConfigError("configured_count", "must be >= 0")
        if self.library_retry_iterations < 1:
            raise ConfigError("library_retry_iterations", "must be >= 1")


def configured_count_from_file(path: Path, node_name: str) -> int | None:
    """``nodes[<node_name>].gpuCount`` from an OpenPAI-style GPU configuration file, ``None`` if not listed."""
    data = json.loads(path.read_text(encoding="utf-8"))
    entry = data.get("nodes", {}).get(node_name) if isinstance(data, dict) else None
    if not isinstance(entry, dict) or "gpuCount" not in entry:
        return None
    return int(entry["gpuCount"])


def worker_deadline(timeout: float) -> float:
    """How long the worker may take: the collection timeout less a margin to kill and reap it."""
    return max(MIN_WORKER_DEADLINE_SECONDS, min(timeout - DEADLINE_MARGIN_SECONDS, timeout * 0.9))


def sm_active_ratio(device: DeviceReading) -> float | None:
    """The whole GPU's SM activity from GPM, 0-1, where it has one."""
    values = dict(device.gpm.values) if device.gpm is not None else {}
    return ratio(values["sm"]) if "sm" in values else None


def gpu_state(snapshot: Snapshot) -> GpuState:
    """What the jobs collector needs: devices by index, minor number and UUID, and processes by GPU."""
    devices: list[GpuDevice] = []
    processes: list[GpuProcess] = []
    for d in snapshot.devices:
        if d.error is not None:
            continue
        minor = str(d.minor_number) if d.minor_number is not None else "unknown"
        devices.append(
            GpuDevice(
                index=d.index,
                minor_number=minor,
                uuid=d.uuid or "",
                utilization_gpu_percent=float(d.utilization_gpu_percent)
                if d.utilization_gpu_percent is not None
                else None,
                memory_used_percent=memory_used_percent(d),
                memory_used_bytes=d.memory_used_bytes,
                memory_total_bytes=d.memory_total_bytes,
                mig_device_uuids=tuple(m.uuid for m in d.mig_devices),
                lost=d.lost,
                sm_active_ratio=sm_active_ratio(d),
                power_watts=d.power_milliwatts / 1000 if d.power_milliwatts is not None else None,
                energy_joules=d.energy_millijoules / 1000 if d.energy_millijoules is not None else None,
            )
        )
        processes.extend(
            GpuProcess(p.pid, minor, p.used_memory_bytes, p.sm_utilization_percent, p.memory_utilization_percent)
            for p in d.processes
        )
    return GpuState(devices=tuple(devices), processes=tuple(processes))


class GpuCollector(Collector[GpuOptions]):
    name: ClassVar[str] = "gpu"
    description: ClassVar[str] = "NVIDIA GPUs through NVML, in a supervised worker process"
    options_class: ClassVar[type[CollectorOptions]] = GpuOptions
    metrics: ClassVar[tuple[MetricSpec, ...]] = ALL_SPECS

    def __init__(
        self,
        options: GpuOptions,
        context: CollectorContext,
        supervisor: WorkerSupervisor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(options, context)
        self.supervisor = supervisor if supervisor is not None else WorkerSupervisor()
        self._clock = clock
        self._xids = XidLedger()
        self._identity_by_index: dict[int, tuple[int, str]] = {}
        self._unreadable: dict[int, str] = {}
        self._iteration = 0
        self._absent: Snapshot | None = None
        self._absent_since_iteration = 0
        self._reported_status: tuple[NvmlStatus, str] | None = None
        self._config_problem_logged = False
        self._last_success: float | None = None
        self.last_snapshot: Snapshot | None = None

    def _configured_count(self) -> int | None:
        if self.options.configured_count is not None:
            return self.options.configured_count
        path = self.options.configuration_file
        if path is None:
            return None
        try:
            return configured_count_from_file(path, self.context.node_name)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            if not self._config_problem_logged:
                log.warning("cannot read the GPU configuration file %s: %s", path, exc)
                self._config_problem_logged = True
            return None

    def _report_status(self, snapshot: Snapshot) -> None:
        """Log a change of NVML status once, not every iteration."""
        current = (snapshot.status, snapshot.detail)
        if current == self._reported_status:
            return
        if snapshot.status == "ok":
            log.info("NVML available: driver %s, %d GPU(s)", snapshot.driver_version, len(snapshot.devices))
        elif snapshot.status in ABSENT_STATUSES:
            log.warning(
                "NVML not usable on this node (%s: %s); reporting it as a state and retrying every %d iterations",
                snapshot.status,
                snapshot.detail,
                self.options.library_retry_iterations,
            )
        else:
            log.error("NVML error: %s", snapshot.detail)
        self._reported_status = current

    def _fetch(self) -> Snapshot:
        if self._absent is not None:
            waited = self._iteration - self._absent_since_iteration
            if waited < self.options.library_retry_iterations:
                return self._absent
        try:
            snapshot = self.supervisor.request(worker_deadline(self.options.timeout))
        except WorkerFailed as exc:
            return Snapshot(status="timeout" if exc.hung else "error", detail=str(exc))
        if snapshot.status in ABSENT_STATUSES:
            self._absent = snapshot
            self._absent_since_iteration = self._iteration
        else:
            self._absent = None
        return snapshot

    def _fill_lost_identity(self, snapshot: Snapshot) -> Snapshot:
        """A lost or unreadable GPU answers nothing: name it by the minor number and UUID it had (a new worker does
        not know them)."""
        devices: list[DeviceReading] = []
        for d in snapshot.devices:
            if d.minor_number is not None and d.uuid is not None:
                self._identity_by_index[d.index] = (d.minor_number, d.uuid)
            elif (d.lost or d.error is not None) and d.index in self._identity_by_index:
                minor, uuid = self._identity_by_index[d.index]
                d = d._replace(minor_number=minor, uuid=d.uuid or uuid)
            devices.append(d)
        return snapshot._replace(devices=tuple(devices))

    def _report_unreadable(self, devices: tuple[DeviceReading, ...]) -> None:
        """Log a GPU that NVML counts but cannot read when it becomes so (or its error changes), and when it ends."""
        current = {d.index: d for d in devices if d.error is not None}
        for index, d in current.items():
            if self._unreadable.get(index) == d.error:
                continue
            hint = NO_PERMISSION_HINT if d.error_class == "no_permission" else OTHER_ERROR_HINT
            log.error(
                "GPU %d (UUID %s, /dev/nvidia%s) is counted by NVML but cannot be read: %s (%s); %s",
                index,
                d.uuid or "unknown",
                d.minor_number if d.minor_number is not None else "?",
                d.error,
                d.error_class,
                hint,
            )
        for index in sorted(self._unreadable.keys() - current.keys()):
            log.info("GPU %d is no longer unreadable", index)
        self._unreadable = {index: d.error or "" for index, d in current.items()}

    def _health(self, status: NvmlStatus) -> Health:
        return Health(
            node_name=self.context.node_name,
            status=status,
            required=self.options.required,
            configured_gpu_count=self._configured_count(),
            worker_restarts=self.supervisor.restarts,
            nvml_timeouts=self.supervisor.timeouts,
            last_success=self._last_success,
        )

    def collect(self) -> Iterable[Metric]:
        self._iteration += 1
        snapshot = self._fetch()
        self._report_status(snapshot)
        self.last_snapshot = snapshot
        if snapshot.status != "ok":
            return list(health_families(self._health(snapshot.status)))
        self._last_success = self._clock()
        snapshot = self._fill_lost_identity(snapshot)
        self._report_unreadable(snapshot.devices)
        self._xids.update(self.supervisor.generation, snapshot.xids)
        self.context.shared.publish(GPU_STATE, gpu_state(snapshot))
        extra = BuildInput(
            node_name=self.context.node_name,
            memory_leak_threshold_bytes=self.options.memory_leak_threshold_bytes,
            xids=tuple(self._xids.totals()),
        )
        return [*health_families(self._health("ok")), *gpu_families(snapshot, extra)]

    def close(self) -> None:
        self.supervisor.close()
