"""How the GPU collector's state becomes metric families (the families themselves are in :mod:`.metrics`).

Two parts, so that the collector's health stays visible while NVML fails: :func:`health_families` (NVML status,
worker restarts and timeouts, last success) are built on every collection, :func:`gpu_families` only from a
snapshot in which NVML answered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric

from pai_monitoring.gpu import metrics as m
from pai_monitoring.gpu.model import NVML_STATUSES, DeviceReading, NvmlStatus, Snapshot, XidCount
from pai_monitoring.gpu.profiling_families import profiling_families, ratio
from pai_monitoring.runtime.metrics import MetricSpec

# (NVML bit, our reason label, the original nvidia-smi XML tag) in nvidia-smi's XML order.
CLOCK_EVENT_REASONS: tuple[tuple[int, str, str], ...] = (
    (0x001, "gpu_idle", "clocks_throttle_reason_gpu_idle"),
    (0x002, "applications_clocks_setting", "clocks_throttle_reason_applications_clocks_setting"),
    (0x004, "sw_power_cap", "clocks_throttle_reason_sw_power_cap"),
    (0x008, "hw_slowdown", "clocks_throttle_reason_hw_slowdown"),
    (0x040, "hw_thermal_slowdown", "clocks_throttle_reason_hw_thermal_slowdown"),
    (0x080, "hw_power_brake_slowdown", "clocks_throttle_reason_hw_power_brake_slowdown"),
    (0x010, "sync_boost", "clocks_throttle_reason_sync_boost"),
    (0x020, "sw_thermal_slowdown", "clocks_throttle_reason_sw_thermal_slowdown"),
    (0x100, "display_clock_setting", "clocks_throttle_reason_display_clocks_setting"),
)

MHZ = 1_000_000
VENDOR = "nvidia"
UNKNOWN = "unknown"


def throttle_label(reasons: int) -> str:
    """The original ``clocks_throttle_reasons`` label: comma-joined tag names of the active reasons."""
    return ",".join(tag for bit, _, tag in CLOCK_EVENT_REASONS if reasons & bit)


def memory_used_percent(device: DeviceReading) -> float | None:
    if device.memory_used_bytes is None or not device.memory_total_bytes:
        return None
    return device.memory_used_bytes / device.memory_total_bytes * 100.0


def minor_label(device: DeviceReading) -> str:
    return str(device.minor_number) if device.minor_number is not None else UNKNOWN


def is_leaking(device: DeviceReading, threshold_bytes: int) -> bool | None:
    """Memory in use above the threshold with no process on the GPU; ``None`` where that cannot be known.

    In MIG mode the whole GPU's figures include each instance's own bookkeeping and, without privileges, not every
    process is listed; a GPU whose process lists the driver refused says nothing about its processes.
    """
    if device.memory_used_bytes is None or device.mig_mode or not device.processes_listed:
        return None
    return device.memory_used_bytes > threshold_bytes and not device.processes


@dataclass(frozen=True)
class Health:
    """The collector's own state, exported on every collection."""

    node_name: str
    status: NvmlStatus
    required: bool
    configured_gpu_count: int | None
    worker_restarts: int
    nvml_timeouts: int
    last_success: float | None


@dataclass(frozen=True)
class BuildInput:
    """Everything besides the snapshot that the per-GPU families depend on."""

    node_name: str
    memory_leak_threshold_bytes: int
    xids: tuple[XidCount, ...]


class _Families:
    """Lazily created families, yielded in spec order (empty ones left out)."""

    def __init__(self, specs: tuple[MetricSpec, ...]) -> None:
        self._specs = specs
        self._by_name: dict[str, Any] = {}

    def add(self, spec: MetricSpec, labels: Mapping[str, str], value: float | None) -> None:
        """Add a sample; a ``None`` value (not reported) adds nothing."""
        if value is None:
            return
        fam = self._by_name.get(spec.name)
        if fam is None:
            fam = self._by_name[spec.name] = spec.family()
        fam.add_metric([labels[name] for name in spec.labels], float(value))

    def __iter__(self) -> Iterator[Metric]:
        for spec in self._specs:
            fam = self._by_name.get(spec.name)
            if fam is not None:
                yield fam


def health_families(health: Health) -> Iterator[Metric]:
    out = _Families(m.HEALTH_SPECS)
    node = {m.NODE: health.node_name}
    for name in NVML_STATUSES:
        out.add(m.NVML_STATUS, {**node, "status": name}, 1 if name == health.status else 0)
    out.add(m.REQUIRED, node, int(health.required))
    out.add(m.CONFIGURED_GPU_COUNT, node, health.configured_gpu_count)
    out.add(m.WORKER_RESTARTS, node, health.worker_restarts)
    out.add(m.NVML_TIMEOUTS, node, health.nvml_timeouts)
    out.add(m.NVML_LAST_SUCCESS, node, health.last_success)
    yield from out


def gpu_families(snapshot: Snapshot, extra: BuildInput) -> Iterator[Metric]:
    """The per-GPU families of one snapshot in which NVML answered (status ``ok``)."""
    out = _Families(m.GPU_SPECS)
    out.add(m.ATTACHED_GPUS, {m.NODE: extra.node_name}, len(snapshot.devices))
    by_minor: dict[str, dict[str, str]] = {}
    for device in snapshot.devices:
        ident = {
            m.M: minor_label(device),
            m.NODE: extra.node_name,
            "index": str(device.index),
            "uuid": device.uuid or "",
        }
        by_minor.setdefault(ident[m.M], ident)
        if device.error is None:
            out.add(m.LOST, ident, 1 if device.lost else 0)
        else:
            out.add(m.UNREADABLE, {**ident, "error": device.error_class}, 1)
        if not device.lost and device.error is None:
            _device_families(out, device, ident, snapshot, extra)
    for xid in extra.xids:
        unmatched = {m.M: xid.minor_number, m.NODE: extra.node_name, "index": "", "uuid": ""}
        ident = by_minor.get(xid.minor_number, unmatched)
        labels = {**ident, "xid": str(xid.xid)}
        out.add(m.XID_ERRORS, labels, xid.count)
        out.add(m.XID_LAST_SEEN, labels, xid.last_seen)
    yield from out


def _device_families(
    out: _Families, d: DeviceReading, ident: Mapping[str, str], snapshot: Snapshot, extra: BuildInput
) -> None:
    info = {
        **ident,
        "pci_bus_id": d.pci_bus_id or "",
        "model": d.name or "",
        "driver_version": snapshot.driver_version or "",
        "cuda_version": snapshot.cuda_version or "",
    }
    out.add(m.INFO, info, 1)
    vendor = {**ident, "vender": VENDOR}
    out.add(m.UTILIZATION_GPU, ident, d.utilization_gpu_percent)
    out.add(m.GPU_UTILIZATION, vendor, d.utilization_gpu_percent)
    mem_pct = memory_used_percent(d)
    out.add(m.UTILIZATION_MEMORY, ident, mem_pct)
    out.add(m.GPU_MEM_UTILIZATION, vendor, mem_pct)
    out.add(m.MEMORY_USED, ident, d.memory_used_bytes)
    out.add(m.MEMORY_TOTAL, ident, d.memory_total_bytes)
    out.add(m.MEMORY_RESERVED, ident, d.memory_reserved_bytes)
    out.add(m.TEMPERATURE, ident, d.temperature_celsius)
    out.add(m.ECC_ERROR_COUNT, {**ident, "type": "single"}, d.ecc_corrected_volatile)
    out.add(m.ECC_ERROR_COUNT, {**ident, "type": "double"}, d.ecc_uncorrected_volatile)
    out.add(m.ECC_ERRORS, {**ident, "type": "corrected"}, d.ecc_corrected_volatile)
    out.add(m.ECC_ERRORS, {**ident, "type": "uncorrected"}, d.ecc_uncorrected_volatile)
    out.add(m.MEMORY_LEAK, ident, _flag(is_leaking(d, extra.memory_leak_threshold_bytes)))
    if d.performance_state is not None:
        reasons = throttle_label(d.clock_event_reasons or 0)
        out.add(m.PERFORMANCE_STATE, {**ident, "clocks_throttle_reasons": reasons}, d.performance_state)
    if d.clock_event_reasons is not None:
        for bit, reason, _ in CLOCK_EVENT_REASONS:
            out.add(m.CLOCK_EVENT, {**ident, "reason": reason}, 1 if d.clock_event_reasons & bit else 0)
    out.add(m.POWER, ident, _scaled(d.power_milliwatts, 1e-3))
    out.add(m.POWER_LIMIT, ident, _scaled(d.power_limit_milliwatts, 1e-3))
    out.add(m.ENERGY, ident, _scaled(d.energy_millijoules, 1e-3))
    out.add(m.SM_CLOCK, ident, _scaled(d.sm_clock_mhz, MHZ))
    out.add(m.MEMORY_CLOCK, ident, _scaled(d.memory_clock_mhz, MHZ))
    out.add(m.FAN, ident, _scaled(d.fan_percent, 0.01))
    out.add(m.PCIE_REPLAY, ident, d.pcie_replay_count)
    out.add(m.RETIRED_PAGES, {**ident, "cause": "single_bit_ecc"}, d.retired_pages_single_bit)
    out.add(m.RETIRED_PAGES, {**ident, "cause": "double_bit_ecc"}, d.retired_pages_double_bit)
    out.add(m.RETIRED_PAGES_PENDING, ident, _flag(d.retired_pages_pending))
    out.add(m.REMAPPED_ROWS, {**ident, "cause": "correctable"}, d.remapped_rows_correctable)
    out.add(m.REMAPPED_ROWS, {**ident, "cause": "uncorrectable"}, d.remapped_rows_uncorrectable)
    out.add(m.ROW_REMAP_PENDING, ident, _flag(d.remapped_rows_pending))
    out.add(m.ROW_REMAP_FAILURE, ident, _flag(d.remapped_rows_failure))
    for proc in d.processes:
        pid = {**ident, "pid": str(proc.pid)}
        out.add(m.PROCESS_MEMORY, pid, proc.used_memory_bytes)
        out.add(m.PROCESS_SM_UTILIZATION, pid, _ratio(proc.sm_utilization_percent))
        out.add(m.PROCESS_MEMORY_UTILIZATION, pid, _ratio(proc.memory_utilization_percent))
    out.add(m.MIG_MODE, ident, _flag(d.mig_mode))
    for mig in d.mig_devices:
        mig_labels = {**ident, "mig_uuid": mig.uuid}
        ids = {"gpu_instance_id": _id(mig.gpu_instance_id), "compute_instance_id": _id(mig.compute_instance_id)}
        out.add(m.MIG_INSTANCE_INFO, {**mig_labels, **ids, "profile": mig.profile}, 1)
        out.add(m.MIG_INSTANCE_MEMORY, mig_labels, mig.memory_used_bytes)
    profiling_families(out.add, d, ident)


def _scaled(value: int | None, factor: float) -> float | None:
    return value * factor if value is not None else None


def _ratio(percent: float | None) -> float | None:
    return ratio(percent) if percent is not None else None


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _id(value: int | None) -> str:
    return str(value) if value is not None else ""
