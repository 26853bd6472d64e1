"""The ``gpu`` collector: NVML snapshots from a supervised worker turned into metrics and a shared ``GpuState``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from prometheus_client.metrics_core import Metric

from pai_monitoring.gpu.metrics import ALL_SPECS, BuildInput, build_families, memory_used_percent, status_families
from pai_monitoring.gpu.model import DeviceReading, NvmlStatus, Snapshot
from pai_monitoring.gpu.supervisor import WorkerSupervisor
from pai_monitoring.gpu.xid import XidLedger
from pai_monitoring.runtime.collector import Collector, CollectorContext, CollectorOptions
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.metrics import MetricSpec
from pai_monitoring.shared_model import GPU_STATE, GpuDevice, GpuProcess, GpuState

log = logging.getLogger(__name__)

DEFAULT_MEMORY_LEAK_THRESHOLD_BYTES = 20 * 1024 * 1024
DEFAULT_LIBRARY_RETRY_ITERATIONS = 10
ABSENT_STATUSES: frozenset[NvmlStatus] = frozenset({"library_not_found", "driver_not_loaded"})
MIN_WORKER_DEADLINE_SECONDS = 0.1
DEADLINE_MARGIN_SECONDS = 1.0


@dataclass(frozen=True)
class GpuOptions(CollectorOptions):
    memory_leak_threshold_bytes: int = field(
        default=DEFAULT_MEMORY_LEAK_THRESHOLD_BYTES,
        metadata={
            "help": "GPU memory in use (bytes) above which a GPU that no process holds counts as leaking "
            "(nvidiasmi_memory_leak_count)."
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
            )
        )
        processes.extend(GpuProcess(p.pid, minor, p.used_memory_bytes) for p in d.processes)
    return GpuState(devices=tuple(devices), processes=tuple(processes))


class GpuCollector(Collector[GpuOptions]):
    name: ClassVar[str] = "gpu"
    description: ClassVar[str] = "NVIDIA GPUs through NVML, in a supervised worker process"
    options_class: ClassVar[type[CollectorOptions]] = GpuOptions
    metrics: ClassVar[tuple[MetricSpec, ...]] = ALL_SPECS

    def __init__(
        self, options: GpuOptions, context: CollectorContext, supervisor: WorkerSupervisor | None = None
    ) -> None:
        super().__init__(options, context)
        self.supervisor = supervisor if supervisor is not None else WorkerSupervisor()
        self._xids = XidLedger()
        self._minor_by_index: dict[int, int] = {}
        self._iteration = 0
        self._absent: Snapshot | None = None
        self._absent_since_iteration = 0
        self._reported_status: tuple[NvmlStatus, str] | None = None
        self._config_problem_logged = False
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
        snapshot = self.supervisor.request(worker_deadline(self.options.timeout))
        if snapshot.status in ABSENT_STATUSES:
            self._absent = snapshot
            self._absent_since_iteration = self._iteration
        else:
            self._absent = None
        return snapshot

    def _fill_lost_minors(self, snapshot: Snapshot) -> Snapshot:
        devices: list[DeviceReading] = []
        for d in snapshot.devices:
            if d.minor_number is not None:
                self._minor_by_index[d.index] = d.minor_number
            elif d.lost and d.index in self._minor_by_index:
                d = DeviceReading(index=d.index, lost=True, minor_number=self._minor_by_index[d.index], uuid=d.uuid)
            devices.append(d)
        return snapshot._replace(devices=tuple(devices))

    def collect(self) -> Iterable[Metric]:
        self._iteration += 1
        snapshot = self._fetch()
        self._report_status(snapshot)
        self.last_snapshot = snapshot
        configured = self._configured_count()
        if snapshot.status != "ok":
            return list(status_families(snapshot.status, configured))
        snapshot = self._fill_lost_minors(snapshot)
        self._xids.update(self.supervisor.generation, snapshot.xids)
        self.context.shared.publish(GPU_STATE, gpu_state(snapshot))
        extra = BuildInput(
            node_name=self.context.node_name,
            memory_leak_threshold_bytes=self.options.memory_leak_threshold_bytes,
            configured_gpu_count=configured,
            xids=tuple(self._xids.totals()),
            worker_restarts=self.supervisor.restarts,
        )
        return list(self._families(snapshot, extra))

    @staticmethod
    def _families(snapshot: Snapshot, extra: BuildInput) -> Iterator[Metric]:
        yield from build_families(snapshot, extra)

    def close(self) -> None:
        self.supervisor.close()
