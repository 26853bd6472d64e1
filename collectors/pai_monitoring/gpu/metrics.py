"""The GPU collector's metric families and how a snapshot becomes them.

Names of the original job-exporter are kept as they were (``nvidiasmi_*``, ``gpu_utilization`` with its ``vender``
label); new families follow Prometheus conventions (base units, ``_total`` counters, ``_info`` identity series).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric

from pai_monitoring.gpu.model import NVML_STATUSES, DeviceReading, NvmlStatus, Snapshot, XidCount
from pai_monitoring.runtime.metrics import MetricSpec

M = "minor_number"
_NODE_M = ("node_name", M)

# ---- the original job-exporter's families ----
UTILIZATION_GPU = MetricSpec("nvidiasmi_utilization_gpu", "gauge", "GPU core utilisation in percent (0-100).", (M,))
UTILIZATION_MEMORY = MetricSpec(
    "nvidiasmi_utilization_memory", "gauge", "GPU framebuffer memory used / total x 100 (0-100).", (M,)
)
GPU_UTILIZATION = MetricSpec(
    "gpu_utilization", "gauge", "GPU core utilisation in percent (0-100), vendor-neutral name.", (M, "vender")
)
GPU_MEM_UTILIZATION = MetricSpec(
    "gpu_mem_utilization", "gauge", "GPU memory used / total x 100 (0-100), vendor-neutral name.", (M, "vender")
)
TEMPERATURE = MetricSpec("nvidiasmi_temperature", "gauge", "GPU core temperature in degrees Celsius.", (M,))
ECC_ERROR_COUNT = MetricSpec(
    "nvidiasmi_ecc_error_count",
    "gauge",
    "Volatile ECC errors since the driver loaded; type single (corrected) or double (uncorrected).",
    (*_NODE_M, "type"),
)
MEMORY_LEAK = MetricSpec(
    "nvidiasmi_memory_leak_count",
    "gauge",
    "1 when GPU memory in use is above the threshold (bytes) while no process holds the GPU, else 0.",
    (M,),
)
PERFORMANCE_STATE = MetricSpec(
    "nvidiasmi_performance_state",
    "gauge",
    "Performance state N of P<N> (0 fastest, 15 slowest); the label lists the active clock event reasons.",
    (*_NODE_M, "clocks_throttle_reasons"),
)
CONFIGURED_GPU_COUNT = MetricSpec(
    "configured_gpu_count", "gauge", "Number of GPUs this node is configured to have (absent when not configured)."
)
ATTACHED_GPUS = MetricSpec("nvidiasmi_attached_gpus", "gauge", "Number of GPUs NVML reports, lost ones included.")

# ---- new families ----
INFO = MetricSpec(
    "pai_gpu_info",
    "gauge",
    "Identity of a GPU; always 1.",
    (M, "index", "uuid", "pci_bus_id", "model", "driver_version", "cuda_version"),
)
LOST = MetricSpec(
    "pai_gpu_lost", "gauge", "1 when the GPU has fallen off the bus (NVML GPU_IS_LOST), else 0.", ("index", M)
)
NVML_STATUS = MetricSpec(
    "pai_gpu_nvml_status",
    "gauge",
    "1 for the current state of the NVML library on this node, 0 for the others.",
    ("status",),
)
POWER = MetricSpec("pai_gpu_power_watts", "gauge", "Power draw in watts.", (M,))
POWER_LIMIT = MetricSpec("pai_gpu_power_limit_watts", "gauge", "Enforced power limit in watts.", (M,))
ENERGY = MetricSpec("pai_gpu_energy_joules_total", "counter", "Energy used since the driver loaded, in joules.", (M,))
SM_CLOCK = MetricSpec("pai_gpu_sm_clock_hertz", "gauge", "Current SM clock in hertz.", (M,))
MEMORY_CLOCK = MetricSpec("pai_gpu_memory_clock_hertz", "gauge", "Current memory clock in hertz.", (M,))
FAN = MetricSpec("pai_gpu_fan_speed_ratio", "gauge", "Fan speed as a ratio of its maximum (0-1).", (M,))
PCIE_REPLAY = MetricSpec("pai_gpu_pcie_replay_total", "counter", "PCIe replays since the driver loaded.", (M,))
XID_ERRORS = MetricSpec(
    "pai_gpu_xid_errors_total", "counter", "Xid errors seen by this exporter, per Xid code.", (M, "xid")
)
XID_LAST_SEEN = MetricSpec(
    "pai_gpu_xid_last_seen_timestamp_seconds", "gauge", "Unix time of the latest Xid error of this code.", (M, "xid")
)
ECC_ERRORS = MetricSpec(
    "pai_gpu_ecc_errors_total",
    "counter",
    "Volatile ECC errors since the driver loaded, by type (corrected, uncorrected).",
    (M, "type"),
)
RETIRED_PAGES = MetricSpec(
    "pai_gpu_retired_pages",
    "gauge",
    "Retired framebuffer pages by cause (single_bit_ecc, double_bit_ecc).",
    (M, "cause"),
)
RETIRED_PAGES_PENDING = MetricSpec(
    "pai_gpu_retired_pages_pending", "gauge", "1 when a page retirement waits for a GPU reset, else 0.", (M,)
)
ROW_REMAP_PENDING = MetricSpec(
    "pai_gpu_row_remap_pending", "gauge", "1 when a row remapping waits for a GPU reset, else 0.", (M,)
)
ROW_REMAP_FAILURE = MetricSpec(
    "pai_gpu_row_remap_failure", "gauge", "1 when a row remapping has failed (the GPU needs service), else 0.", (M,)
)
REMAPPED_ROWS = MetricSpec(
    "pai_gpu_remapped_rows", "gauge", "Rows remapped by cause (correctable, uncorrectable).", (M, "cause")
)
CLOCK_EVENT = MetricSpec(
    "pai_gpu_clock_event_active",
    "gauge",
    "1 while this clock event (throttle) reason holds the clocks down, else 0.",
    (M, "reason"),
)
PROCESS_MEMORY = MetricSpec(
    "pai_gpu_process_memory_bytes", "gauge", "GPU memory used by a process (host PID), in bytes.", (M, "pid")
)
MIG_MODE = MetricSpec("pai_gpu_mig_mode", "gauge", "1 when the GPU is in MIG mode, else 0.", (M,))
MIG_INSTANCE_INFO = MetricSpec(
    "pai_gpu_mig_instance_info",
    "gauge",
    "A MIG device of a GPU in MIG mode; always 1.",
    (M, "mig_uuid", "gpu_instance_id", "compute_instance_id", "profile"),
)
MIG_INSTANCE_MEMORY = MetricSpec(
    "pai_gpu_mig_instance_memory_used_bytes", "gauge", "Memory used on a MIG device, in bytes.", (M, "mig_uuid")
)
WORKER_RESTARTS = MetricSpec(
    "pai_gpu_worker_restarts_total",
    "counter",
    "NVML worker processes killed past their deadline or found dead since the exporter started.",
)

ALL_SPECS: tuple[MetricSpec, ...] = (
    UTILIZATION_GPU,
    UTILIZATION_MEMORY,
    GPU_UTILIZATION,
    GPU_MEM_UTILIZATION,
    TEMPERATURE,
    ECC_ERROR_COUNT,
    MEMORY_LEAK,
    PERFORMANCE_STATE,
    CONFIGURED_GPU_COUNT,
    ATTACHED_GPUS,
    INFO,
    LOST,
    NVML_STATUS,
    POWER,
    POWER_LIMIT,
    ENERGY,
    SM_CLOCK,
    MEMORY_CLOCK,
    FAN,
    PCIE_REPLAY,
    XID_ERRORS,
    XID_LAST_SEEN,
    ECC_ERRORS,
    RETIRED_PAGES,
    RETIRED_PAGES_PENDING,
    ROW_REMAP_PENDING,
    ROW_REMAP_FAILURE,
    REMAPPED_ROWS,
    CLOCK_EVENT,
    PROCESS_MEMORY,
    MIG_MODE,
    MIG_INSTANCE_INFO,
    MIG_INSTANCE_MEMORY,
    WORKER_RESTARTS,
)

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


def throttle_label(reasons: int) -> str:
    """The original ``clocks_throttle_reasons`` label: comma-joined tag names of the active reasons."""
    return ",".join(tag for bit, _, tag in CLOCK_EVENT_REASONS if reasons & bit)


def memory_used_percent(device: DeviceReading) -> float | None:
    if device.memory_used_bytes is None or not device.memory_total_bytes:
        return None
    return device.memory_used_bytes / device.memory_total_bytes * 100.0


def minor_label(device: DeviceReading) -> str:
    return str(device.minor_number) if device.minor_number is not None else "unknown"


@dataclass(frozen=True)
class BuildInput:
    """Everything besides the snapshot that the families depend on."""

    node_name: str
    memory_leak_threshold_bytes: int
    configured_gpu_count: int | None
    xids: tuple[XidCount, ...]
    worker_restarts: int


def status_families(status: NvmlStatus, configured: int | None) -> Iterator[Metric]:
    fam = NVML_STATUS.family()
    for name in NVML_STATUSES:
        fam.add_metric([name], 1.0 if name == status else 0.0)
    yield fam
    if configured is not None:
        conf = CONFIGURED_GPU_COUNT.family()
        conf.add_metric([], float(configured))
        yield conf


class _Families:
    """Lazily created families, yielded in spec order (empty ones left out)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Any] = {}

    def add(self, spec: MetricSpec, labels: list[str], value: float | int | None) -> None:
        if value is None:
            return
        fam = self._by_name.get(spec.name)
        if fam is None:
            fam = self._by_name[spec.name] = spec.family()
        fam.add_metric(labels, float(value))

    def __iter__(self) -> Iterator[Metric]:
        for spec in ALL_SPECS:
            fam = self._by_name.get(spec.name)
            if fam is not None:
                yield fam


def build_families(snapshot: Snapshot, extra: BuildInput) -> Iterator[Metric]:
    """The metric families of one successful snapshot (status ``ok``)."""
    yield from status_families(snapshot.status, extra.configured_gpu_count)
    out = _Families()
    out.add(ATTACHED_GPUS, [], len(snapshot.devices))
    for device in snapshot.devices:
        if device.error is None:
            out.add(LOST, [str(device.index), minor_label(device)], 1 if device.lost else 0)
        if not device.lost and device.error is None:
            _device_families(out, device, snapshot, extra)
    for xid in extra.xids:
        out.add(XID_ERRORS, [xid.minor_number, str(xid.xid)], xid.count)
        out.add(XID_LAST_SEEN, [xid.minor_number, str(xid.xid)], xid.last_seen)
    out.add(WORKER_RESTARTS, [], extra.worker_restarts)
    yield from out


def _device_families(out: _Families, d: DeviceReading, snapshot: Snapshot, extra: BuildInput) -> None:
    m = minor_label(d)
    out.add(
        INFO,
        [
            m,
            str(d.index),
            d.uuid or "",
            d.pci_bus_id or "",
            d.name or "",
            snapshot.driver_version or "",
            snapshot.cuda_version or "",
        ],
        1,
    )
    out.add(UTILIZATION_GPU, [m], d.utilization_gpu_percent)
    out.add(GPU_UTILIZATION, [m, VENDOR], d.utilization_gpu_percent)
    mem_pct = memory_used_percent(d)
    out.add(UTILIZATION_MEMORY, [m], mem_pct)
    out.add(GPU_MEM_UTILIZATION, [m, VENDOR], mem_pct)
    out.add(TEMPERATURE, [m], d.temperature_celsius)
    out.add(ECC_ERROR_COUNT, [extra.node_name, m, "single"], d.ecc_corrected_volatile)
    out.add(ECC_ERROR_COUNT, [extra.node_name, m, "double"], d.ecc_uncorrected_volatile)
    out.add(ECC_ERRORS, [m, "corrected"], d.ecc_corrected_volatile)
    out.add(ECC_ERRORS, [m, "uncorrected"], d.ecc_uncorrected_volatile)
    if d.memory_used_bytes is not None:
        leak = d.memory_used_bytes > extra.memory_leak_threshold_bytes and not d.processes
        out.add(MEMORY_LEAK, [m], 1 if leak else 0)
    if d.performance_state is not None:
        label = throttle_label(d.clock_event_reasons or 0)
        out.add(PERFORMANCE_STATE, [extra.node_name, m, label], d.performance_state)
    if d.clock_event_reasons is not None:
        for bit, reason, _ in CLOCK_EVENT_REASONS:
            out.add(CLOCK_EVENT, [m, reason], 1 if d.clock_event_reasons & bit else 0)
    out.add(POWER, [m], _scaled(d.power_milliwatts, 1e-3))
    out.add(POWER_LIMIT, [m], _scaled(d.power_limit_milliwatts, 1e-3))
    out.add(ENERGY, [m], _scaled(d.energy_millijoules, 1e-3))
    out.add(SM_CLOCK, [m], _scaled(d.sm_clock_mhz, MHZ))
    out.add(MEMORY_CLOCK, [m], _scaled(d.memory_clock_mhz, MHZ))
    out.add(FAN, [m], _scaled(d.fan_percent, 0.01))
    out.add(PCIE_REPLAY, [m], d.pcie_replay_count)
    out.add(RETIRED_PAGES, [m, "single_bit_ecc"], d.retired_pages_single_bit)
    out.add(RETIRED_PAGES, [m, "double_bit_ecc"], d.retired_pages_double_bit)
    out.add(RETIRED_PAGES_PENDING, [m], _flag(d.retired_pages_pending))
    out.add(REMAPPED_ROWS, [m, "correctable"], d.remapped_rows_correctable)
    out.add(REMAPPED_ROWS, [m, "uncorrectable"], d.remapped_rows_uncorrectable)
    out.add(ROW_REMAP_PENDING, [m], _flag(d.remapped_rows_pending))
    out.add(ROW_REMAP_FAILURE, [m], _flag(d.remapped_rows_failure))
    for proc in d.processes:
        out.add(PROCESS_MEMORY, [m, str(proc.pid)], proc.used_memory_bytes)
    out.add(MIG_MODE, [m], _flag(d.mig_mode))
    for mig in d.mig_devices:
        ids = [_id(mig.gpu_instance_id), _id(mig.compute_instance_id)]
        out.add(MIG_INSTANCE_INFO, [m, mig.uuid, *ids, mig.profile], 1)
        out.add(MIG_INSTANCE_MEMORY, [m, mig.uuid], mig.memory_used_bytes)


def _scaled(value: int | None, factor: float) -> float | None:
    return value * factor if value is not None else None


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _id(value: int | None) -> str:
    return str(value) if value is not None else ""
