"""What the NVML worker sends back: immutable named tuples, pickled over a pipe.

Named tuples rather than dataclasses because the worker is a second Python process per exporter and ``dataclasses``
(with ``inspect``) would add about 1.2 MB to it.

Readings keep NVML's own units (milliwatts, millijoules, MHz, percent); conversion to base units happens where the
metrics are built. ``None`` means the driver does not report the value (NOT_SUPPORTED and similar).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

NvmlStatus = Literal["ok", "library_not_found", "driver_not_loaded", "error", "timeout"]
GpmStatus = Literal["ok", "first_sample", "mig_mode", "unsupported_gpu", "unsupported_driver", "error"]
GPM_STATUSES: tuple[GpmStatus, ...] = get_args(GpmStatus)
"""Why a GPU (or GPU instance) has profiling metrics or not. ``first_sample``: the first of the two samples GPM needs
was just taken (the first collection of a worker); ``mig_mode``: the whole GPU is not sampled in MIG mode, its GPU
instances are; ``unsupported_gpu``: a GPU without GPM (before Hopper); ``unsupported_driver``: a driver library without
the GPM calls; ``error``: NVML refused the sample or the metrics."""
NVML_STATUSES: tuple[NvmlStatus, ...] = get_args(NvmlStatus)
"""``timeout``: NVML did not answer within the deadline (the worker was killed, or a killed one is still stuck)."""
UnreadableError = Literal[
    "no_permission", "not_found", "insufficient_power", "irq_issue", "reset_required", "timeout", "unknown", "other"
]
UNREADABLE_ERRORS: tuple[UnreadableError, ...] = get_args(UnreadableError)
"""Why NVML counts a GPU but cannot read it, from the class of NVML's error: ``no_permission`` (the process may not
open the GPU's device node: its mode, or a device cgroup such as systemd's ``DeviceAllow=``), ``not_found``,
``insufficient_power`` (power cables), ``irq_issue`` (the kernel's interrupt set-up), ``reset_required``,
``timeout``, ``unknown`` (NVML's own UNKNOWN), ``other`` (any other NVML error)."""


class ProcessReading(NamedTuple):
    """A process with a context on a GPU (host PID)."""

    pid: int
    used_memory_bytes: int | None
    graphics: bool = False
    sm_utilization_percent: float | None = None
    """Mean SM utilisation of the driver's samples of this process since the previous collection (0 when it has none
    newer); ``None`` where the driver does not report per-process utilisation (MIG mode, old drivers)."""
    memory_utilization_percent: float | None = None
    """The same for the memory controller (time the process read or wrote device memory)."""


class GpmReading(NamedTuple):
    """Profiling metrics of a GPU or GPU instance from NVML GPM, over the window between two collections."""

    status: GpmStatus
    values: tuple[tuple[str, float], ...] = ()
    """(metric key of :data:`pai_monitoring.gpu.profiling.GPM_KEYS`, value in NVML's unit: percent or MiB/s) for each
    metric the GPU offers."""


class NvLinkReading(NamedTuple):
    """The state of one NVLink of a GPU, from NVML field values."""

    link: int
    up: bool
    """True while the link is active (or asleep in its low-power state)."""


class MigReading(NamedTuple):
    """One MIG device (a GPU instance with a compute instance) of a GPU in MIG mode."""

    uuid: str
    gpu_instance_id: int | None
    compute_instance_id: int | None
    profile: str
    memory_used_bytes: int | None
    memory_total_bytes: int | None


class DeviceReading(NamedTuple):
    """Everything read from one physical GPU in one cycle."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: it is the NVML index
    lost: bool = False
    error: str | None = None
    """Why the GPU could not be read at all (other than being lost): NVML's message, e.g. ``Insufficient
    Permissions``."""
    error_class: UnreadableError = "other"
    """The class of that error (meaningful only with ``error``)."""
    minor_number: int | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    name: str | None = None
    utilization_gpu_percent: int | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    """Memory allocated by processes and contexts, without what the driver reserves for itself."""
    memory_reserved_bytes: int | None = None
    """Memory the driver and firmware reserve; ``None`` on drivers without ``nvmlDeviceGetMemoryInfo_v2``."""
    temperature_celsius: int | None = None
    power_milliwatts: int | None = None
    power_limit_milliwatts: int | None = None
    energy_millijoules: int | None = None
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    fan_percent: int | None = None
    pcie_replay_count: int | None = None
    ecc_corrected_volatile: int | None = None
    ecc_uncorrected_volatile: int | None = None
    retired_pages_single_bit: int | None = None
    retired_pages_double_bit: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    clock_event_reasons: int | None = None
    performance_state: int | None = None
    mig_mode: bool | None = None
    mig_devices: tuple[MigReading, ...] = ()
    processes: tuple[ProcessReading, ...] = ()
    processes_listed: bool = True
    """False when the driver would not list the GPU's processes (so an empty ``processes`` means nothing)."""
    gpm: GpmReading | None = None
    """Profiling metrics of the whole GPU; ``None`` when they were not asked for."""
    instance_gpm: tuple[tuple[int, GpmReading], ...] = ()
    """Profiling metrics per GPU instance id, in MIG mode."""
    nvlinks: tuple[NvLinkReading, ...] = ()
    nvlink_errors: tuple[tuple[str, int], ...] = ()
    """(error type of :data:`pai_monitoring.gpu.profiling.NVLINK_ERROR_TYPES`, count over all links since the driver
    loaded)."""
    nvlink_tx_kib: int | None = None
    nvlink_rx_kib: int | None = None
    """Data sent and received over all NVLinks since the driver loaded, in KiB (NVML's unit)."""
    pcie_errors: tuple[tuple[str, int], ...] = ()
    """(error type of :data:`pai_monitoring.gpu.profiling.PCIE_ERROR_TYPES`, count since the driver loaded)."""
    pcie_tx_bytes: int | None = None
    pcie_rx_bytes: int | None = None
    """PCIe bytes sent and received since the driver loaded (drivers from R555)."""


class XidCount(NamedTuple):
    """Xid events of one code on one GPU, counted since the worker started."""

    minor_number: str
    xid: int
    count: int  # type: ignore[assignment]  # shadows tuple.count on purpose
    last_seen: float
    """Unix time of the latest event."""


class Snapshot(NamedTuple):
    """One answer of the worker."""

    status: NvmlStatus
    detail: str = ""
    driver_version: str | None = None
    cuda_version: str | None = None
    devices: tuple[DeviceReading, ...] = ()
    xids: tuple[XidCount, ...] = ()
    """Cumulative counts since this worker process started (not since the last snapshot)."""
    nvml_calls: int = 0
    """NVML calls made for this snapshot (the Xid thread's waits not included)."""
    library_seconds: float = 0.0
    """Wall time spent inside those NVML calls."""
    worker_pid: int = 0
