"""The GPU collector's metric families: names, help and labels, written down once.

Names of the original job-exporter are kept as they were (``nvidiasmi_*``, ``gpu_utilization`` with its ``vender``
label); new families follow Prometheus conventions (base units, ``_total`` counters, ``_info`` identity series).

Every per-GPU family also carries the GPU's identity: ``node_name``, NVML ``index`` and ``uuid`` (what
``nvidia-smi -i`` accepts; ``minor_number``, the original's key, is the ``/dev/nvidia<N>`` number and differs from
the index on real machines). Node-level families carry ``node_name``. How a snapshot becomes these families is in
:mod:`pai_monitoring.gpu.families`.
"""

from __future__ import annotations

from pai_monitoring.runtime.metrics import MetricSpec, MetricType

M = "minor_number"
NODE = "node_name"
GI = "gpu_instance_id"
"""The MIG GPU instance a profiling series covers; empty for the whole GPU."""
IDENTITY = (NODE, "index", "uuid")
"""Labels every per-GPU family has besides its own."""


def _gpu(name: str, kind: MetricType, text: str, *labels: str) -> MetricSpec:
    """A per-GPU family: its own labels (the original's first), then the identity labels it lacks."""
    return MetricSpec(name, kind, text, (*labels, *(label for label in IDENTITY if label not in labels)))


def _node(name: str, kind: MetricType, text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, kind, text, (*labels, NODE))


# ---- the original job-exporter's families ----
UTILIZATION_GPU = _gpu("nvidiasmi_utilization_gpu", "gauge", "GPU core utilisation in percent (0-100).", M)
UTILIZATION_MEMORY = _gpu(
    "nvidiasmi_utilization_memory",
    "gauge",
    "GPU memory in use (driver-reserved memory excluded) / total x 100 (0-100).",
    M,
)
GPU_UTILIZATION = _gpu(
    "gpu_utilization", "gauge", "GPU core utilisation in percent (0-100), vendor-neutral name.", M, "vender"
)
GPU_MEM_UTILIZATION = _gpu(
    "gpu_mem_utilization", "gauge", "GPU memory in use / total x 100 (0-100), vendor-neutral name.", M, "vender"
)
TEMPERATURE = _gpu("nvidiasmi_temperature", "gauge", "GPU core temperature in degrees Celsius.", M)
ECC_ERROR_COUNT = _gpu(
    "nvidiasmi_ecc_error_count",
    "gauge",
    "Volatile ECC errors since the driver loaded; type single (corrected) or double (uncorrected).",
    NODE,
    M,
    "type",
)
MEMORY_LEAK = _gpu(
    "nvidiasmi_memory_leak_count",
    "gauge",
    "1 when GPU memory in use (driver-reserved memory excluded) is above the threshold while the driver lists no "
    "process on the GPU, else 0; absent in MIG mode and where the driver does not list processes.",
    M,
)
PERFORMANCE_STATE = _gpu(
    "nvidiasmi_performance_state",
    "gauge",
    "Performance state N of P<N> (0 fastest, 15 slowest); the label lists the active clock event reasons.",
    NODE,
    M,
    "clocks_throttle_reasons",
)
CONFIGURED_GPU_COUNT = _node(
    "configured_gpu_count", "gauge", "Number of GPUs this node is configured to have (absent when not configured)."
)
ATTACHED_GPUS = _node("nvidiasmi_attached_gpus", "gauge", "Number of GPUs NVML reports, lost ones included.")

# ---- new families ----
INFO = _gpu(
    "pai_gpu_info",
    "gauge",
    "Identity of a GPU; always 1.",
    M,
    "index",
    "uuid",
    "pci_bus_id",
    "model",
    "driver_version",
    "cuda_version",
)
LOST = _gpu("pai_gpu_lost", "gauge", "1 when the GPU has fallen off the bus (NVML GPU_IS_LOST), else 0.", "index", M)
UNREADABLE = _gpu(
    "pai_gpu_unreadable",
    "gauge",
    "1 for a GPU that NVML counts but cannot read, with the class of NVML's error: no_permission (the exporter may "
    "not open /dev/nvidia<minor>: the node's mode or the unit's device cgroup), not_found, insufficient_power, "
    "irq_issue, reset_required, timeout, unknown, other; absent while the GPU is read. minor_number and uuid are "
    "those the GPU had when it was last read (unknown and empty if it never was).",
    M,
    "error",
)
MEMORY_USED = _gpu(
    "pai_gpu_memory_used_bytes",
    "gauge",
    "GPU memory allocated by processes and contexts, in bytes, without the memory the driver reserves.",
    M,
)
MEMORY_TOTAL = _gpu("pai_gpu_memory_total_bytes", "gauge", "GPU memory in total, in bytes.", M)
MEMORY_RESERVED = _gpu(
    "pai_gpu_memory_reserved_bytes",
    "gauge",
    "GPU memory the driver and firmware reserve, in bytes (absent on drivers before R510).",
    M,
)
POWER = _gpu("pai_gpu_power_watts", "gauge", "Power draw in watts.", M)
POWER_LIMIT = _gpu("pai_gpu_power_limit_watts", "gauge", "Enforced power limit in watts.", M)
ENERGY = _gpu("pai_gpu_energy_joules_total", "counter", "Energy used since the driver loaded, in joules.", M)
SM_CLOCK = _gpu("pai_gpu_sm_clock_hertz", "gauge", "Current SM clock in hertz.", M)
MEMORY_CLOCK = _gpu("pai_gpu_memory_clock_hertz", "gauge", "Current memory clock in hertz.", M)
FAN = _gpu("pai_gpu_fan_speed_ratio", "gauge", "Fan speed as a ratio of its maximum (0-1).", M)
PCIE_REPLAY = _gpu("pai_gpu_pcie_replay_total", "counter", "PCIe replays since the driver loaded.", M)
XID_ERRORS = _gpu("pai_gpu_xid_errors_total", "counter", "Xid errors seen by this exporter, per Xid code.", M, "xid")
XID_LAST_SEEN = _gpu(
    "pai_gpu_xid_last_seen_timestamp_seconds", "gauge", "Unix time of the latest Xid error of this code.", M, "xid"
)
ECC_ERRORS = _gpu(
    "pai_gpu_ecc_errors_total",
    "counter",
    "Volatile ECC errors since the driver loaded, by type (corrected, uncorrected).",
    M,
    "type",
)
RETIRED_PAGES = _gpu(
    "pai_gpu_retired_pages", "gauge", "Retired framebuffer pages by cause (single_bit_ecc, double_bit_ecc).", M, "cause"
)
RETIRED_PAGES_PENDING = _gpu(
    "pai_gpu_retired_pages_pending", "gauge", "1 when a page retirement waits for a GPU reset, else 0.", M
)
ROW_REMAP_PENDING = _gpu(
    "pai_gpu_row_remap_pending", "gauge", "1 when a row remapping waits for a GPU reset, else 0.", M
)
ROW_REMAP_FAILURE = _gpu(
    "pai_gpu_row_remap_failure", "gauge", "1 when a row remapping has failed (the GPU needs service), else 0.", M
)
REMAPPED_ROWS = _gpu(
    "pai_gpu_remapped_rows", "gauge", "Rows remapped by cause (correctable, uncorrectable).", M, "cause"
)
CLOCK_EVENT = _gpu(
    "pai_gpu_clock_event_active",
    "gauge",
    "1 while this clock event (throttle) reason holds the clocks down, else 0.",
    M,
    "reason",
)
PROCESS_MEMORY = _gpu(
    "pai_gpu_process_memory_bytes", "gauge", "GPU memory used by a process (host PID), in bytes.", M, "pid"
)
MIG_MODE = _gpu("pai_gpu_mig_mode", "gauge", "1 when the GPU is in MIG mode, else 0.", M)
MIG_INSTANCE_INFO = _gpu(
    "pai_gpu_mig_instance_info",
    "gauge",
    "A MIG device of a GPU in MIG mode; always 1.",
    M,
    "mig_uuid",
    "gpu_instance_id",
    "compute_instance_id",
    "profile",
)
MIG_INSTANCE_MEMORY = _gpu(
    "pai_gpu_mig_instance_memory_used_bytes", "gauge", "Memory used on a MIG device, in bytes.", M, "mig_uuid"
)

# ---- profiling: NVML GPM (Hopper and newer), over the collector's interval; per GPU instance in MIG mode ----
PROFILING_STATUS = _gpu(
    "pai_gpu_profiling_status",
    "gauge",
    "1 for the reason the GPU (or GPU instance) has profiling series or not, 0 for the others: ok, first_sample (the "
    "first of two samples was just taken), mig_mode (the whole GPU is not profiled in MIG mode, its GPU instances "
    "are), unsupported_gpu (no GPM before Hopper), unsupported_driver (a driver without GPM), error.",
    M,
    GI,
    "status",
)
GRAPHICS_ENGINE_ACTIVE = _gpu(
    "pai_gpu_graphics_engine_active_ratio",
    "gauge",
    "Fraction of the interval in which the graphics or compute engine was busy (0-1; DCGM's GR_ENGINE_ACTIVE).",
    M,
    GI,
)
SM_ACTIVE = _gpu(
    "pai_gpu_sm_active_ratio",
    "gauge",
    "Fraction of the interval in which the streaming multiprocessors had work, averaged over all SMs (0-1; DCGM's "
    "SM_ACTIVE): unlike nvidiasmi_utilization_gpu, a kernel on few SMs counts little.",
    M,
    GI,
)
SM_OCCUPANCY = _gpu(
    "pai_gpu_sm_occupancy_ratio",
    "gauge",
    "Resident warps as a fraction of the most the SMs can hold, averaged over the interval (0-1; DCGM's SM_OCCUPANCY).",
    M,
    GI,
)
DRAM_ACTIVE = _gpu(
    "pai_gpu_dram_active_ratio",
    "gauge",
    "Device memory bandwidth used as a fraction of the maximum over the interval (0-1; DCGM's DRAM_ACTIVE).",
    M,
    GI,
)
PIPE_ACTIVE = _gpu(
    "pai_gpu_pipe_active_ratio",
    "gauge",
    "Fraction of the interval in which the SMs' pipe was busy (0-1): tensor (tensor cores, any precision), "
    "tensor_hmma (FP16/BF16), tensor_imma (integer), tensor_dfma and tensor_dmma (FP64), fp64, fp32, fp16 and "
    "integer (non-tensor); only the pipes the GPU reports.",
    M,
    GI,
    "pipe",
)
PCIE_THROUGHPUT = _gpu(
    "pai_gpu_pcie_throughput_bytes_per_second",
    "gauge",
    "PCIe traffic over the interval in bytes per second; direction transmit (from the GPU) or receive (to it).",
    M,
    GI,
    "direction",
)
NVLINK_THROUGHPUT = _gpu(
    "pai_gpu_nvlink_throughput_bytes_per_second",
    "gauge",
    "NVLink traffic of all the GPU's links over the interval in bytes per second; direction transmit or receive.",
    M,
    GI,
    "direction",
)

# ---- NVLink and PCIe counters (NVML field values) ----
NVLINK_UP = _gpu(
    "pai_gpu_nvlink_link_up",
    "gauge",
    "1 while the NVLink is active (or asleep in its low-power state), 0 when it is down.",
    M,
    "link",
)
NVLINK_ERRORS = _gpu(
    "pai_gpu_nvlink_errors_total",
    "counter",
    "NVLink errors over all the GPU's links since the driver loaded, by type: crc (flit CRC, Hopper's data-link CRC), "
    "crc_data (before Hopper), replay (retransmissions), recovery (link retraining). `nvidia-smi nvlink -e` names the "
    "link.",
    M,
    "type",
)
NVLINK_DATA = _gpu(
    "pai_gpu_nvlink_data_bytes_total",
    "counter",
    "NVLink data (without protocol overhead) over all the GPU's links since the driver loaded, in bytes; direction "
    "transmit or receive.",
    M,
    "direction",
)
PCIE_ERRORS = _gpu(
    "pai_gpu_pcie_errors_total",
    "counter",
    "Errors on the GPU's PCIe link since the driver loaded, by type (correctable, receiver, bad_tlp, bad_dllp, lcrc, "
    "nak_received, nak_sent, replay_rollover, l0_to_recovery, non_fatal, fatal, unsupported_request; drivers from "
    "R535).",
    M,
    "type",
)
PCIE_DATA = _gpu(
    "pai_gpu_pcie_data_bytes_total",
    "counter",
    "PCIe bytes since the driver loaded; direction transmit (from the GPU) or receive (drivers from R555).",
    M,
    "direction",
)

# ---- per process ----
PROCESS_SM_UTILIZATION = _gpu(
    "pai_gpu_process_sm_utilization_ratio",
    "gauge",
    "Fraction of the interval in which a process's kernels ran on the GPU (0-1), the mean of the driver's samples of "
    "the process; absent in MIG mode and where the driver has no per-process utilisation.",
    M,
    "pid",
)
PROCESS_MEMORY_UTILIZATION = _gpu(
    "pai_gpu_process_memory_utilization_ratio",
    "gauge",
    "Fraction of the interval in which a process read or wrote device memory (0-1), as for the SM figure.",
    M,
    "pid",
)

# ---- the collector's own health: exported on every collection, also while NVML fails or hangs ----
NVML_STATUS = _node(
    "pai_gpu_nvml_status",
    "gauge",
    "1 for the current state of the NVML library on this node, 0 for the others (timeout: NVML did not answer "
    "within the deadline).",
    "status",
)
REQUIRED = _node(
    "pai_gpu_required",
    "gauge",
    "1 when this node must have GPUs (--collector.gpu.required): a missing library, driver or GPU is a fault.",
)
WORKER_RESTARTS = _node(
    "pai_gpu_worker_restarts_total",
    "counter",
    "NVML worker processes killed past their deadline or found dead since the exporter started.",
)
NVML_TIMEOUTS = _node(
    "pai_gpu_nvml_timeouts_total",
    "counter",
    "Collections in which NVML did not answer within the deadline (the worker was killed, or a killed one is still "
    "stuck in the driver) since the exporter started.",
)
NVML_LAST_SUCCESS = _node(
    "pai_gpu_nvml_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the last collection in which NVML answered (absent until it has once).",
)

HEALTH_SPECS: tuple[MetricSpec, ...] = (
    NVML_STATUS,
    REQUIRED,
    CONFIGURED_GPU_COUNT,
    WORKER_RESTARTS,
    NVML_TIMEOUTS,
    NVML_LAST_SUCCESS,
)
GPU_SPECS: tuple[MetricSpec, ...] = (
    UTILIZATION_GPU,
    UTILIZATION_MEMORY,
    GPU_UTILIZATION,
    GPU_MEM_UTILIZATION,
    TEMPERATURE,
    ECC_ERROR_COUNT,
    MEMORY_LEAK,
    PERFORMANCE_STATE,
    ATTACHED_GPUS,
    INFO,
    LOST,
    UNREADABLE,
    MEMORY_USED,
    MEMORY_TOTAL,
    MEMORY_RESERVED,
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
    PROCESS_SM_UTILIZATION,
    PROCESS_MEMORY_UTILIZATION,
    PROFILING_STATUS,
    GRAPHICS_ENGINE_ACTIVE,
    SM_ACTIVE,
    SM_OCCUPANCY,
    DRAM_ACTIVE,
    PIPE_ACTIVE,
    PCIE_THROUGHPUT,
    NVLINK_THROUGHPUT,
    NVLINK_UP,
    NVLINK_ERRORS,
    NVLINK_DATA,
    PCIE_ERRORS,
    PCIE_DATA,
)
ALL_SPECS: tuple[MetricSpec, ...] = HEALTH_SPECS + GPU_SPECS
