"""The families of what the NVML worker profiles: GPM activity and throughput, NVLink and PCIe counters.

Values arrive in NVML's units (percent, MiB/s, KiB) and leave in base units: ratios 0-1 (clamped, as NVML's rounding
can pass 100 %), bytes per second, bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pai_monitoring.gpu import metrics as m
from pai_monitoring.gpu.model import GPM_STATUSES, DeviceReading, GpmReading
from pai_monitoring.runtime.metrics import MetricSpec

Add = Callable[[MetricSpec, Mapping[str, str], float | None], None]

MIB = 1 << 20
KIB = 1 << 10
PERCENT = 0.01

# Each GPM key of pai_monitoring.gpu.profiling.GPM_KEYS: its family, the labels it adds, the factor to base units.
GPM_SERIES: dict[str, tuple[MetricSpec, tuple[tuple[str, str], ...], float]] = {
    "graphics_engine": (m.GRAPHICS_ENGINE_ACTIVE, (), PERCENT),
    "sm": (m.SM_ACTIVE, (), PERCENT),
    "sm_occupancy": (m.SM_OCCUPANCY, (), PERCENT),
    "dram": (m.DRAM_ACTIVE, (), PERCENT),
    "pipe_tensor": (m.PIPE_ACTIVE, (("pipe", "tensor"),), PERCENT),
    "pipe_tensor_dfma": (m.PIPE_ACTIVE, (("pipe", "tensor_dfma"),), PERCENT),
    "pipe_tensor_dmma": (m.PIPE_ACTIVE, (("pipe", "tensor_dmma"),), PERCENT),
    "pipe_tensor_hmma": (m.PIPE_ACTIVE, (("pipe", "tensor_hmma"),), PERCENT),
    "pipe_tensor_imma": (m.PIPE_ACTIVE, (("pipe", "tensor_imma"),), PERCENT),
    "pipe_fp64": (m.PIPE_ACTIVE, (("pipe", "fp64"),), PERCENT),
    "pipe_fp32": (m.PIPE_ACTIVE, (("pipe", "fp32"),), PERCENT),
    "pipe_fp16": (m.PIPE_ACTIVE, (("pipe", "fp16"),), PERCENT),
    "pipe_integer": (m.PIPE_ACTIVE, (("pipe", "integer"),), PERCENT),
    "pcie_tx": (m.PCIE_THROUGHPUT, (("direction", "transmit"),), MIB),
    "pcie_rx": (m.PCIE_THROUGHPUT, (("direction", "receive"),), MIB),
    "nvlink_tx": (m.NVLINK_THROUGHPUT, (("direction", "transmit"),), MIB),
    "nvlink_rx": (m.NVLINK_THROUGHPUT, (("direction", "receive"),), MIB),
}


def ratio(percent: float) -> float:
    """NVML's percent as a ratio, clamped to 0-1 (NVML's rounding can pass 100 %)."""
    return min(1.0, max(0.0, percent / 100))


def _base_units(value: float, factor: float) -> float:
    return ratio(value) if factor == PERCENT else max(0.0, value * factor)


def _gpm(add: Add, labels: Mapping[str, str], reading: GpmReading) -> None:
    for status in GPM_STATUSES:
        add(m.PROFILING_STATUS, {**labels, "status": status}, 1 if status == reading.status else 0)
    for key, value in reading.values:
        spec, extra, factor = GPM_SERIES[key]
        add(spec, {**labels, **dict(extra)}, _base_units(value, factor))


def profiling_families(add: Add, device: DeviceReading, ident: Mapping[str, str]) -> None:
    """Add the GPM, NVLink and PCIe series of one GPU that NVML answered for."""
    if device.gpm is not None:
        _gpm(add, {**ident, m.GI: ""}, device.gpm)
    for instance, reading in device.instance_gpm:
        _gpm(add, {**ident, m.GI: str(instance)}, reading)
    for link in device.nvlinks:
        add(m.NVLINK_UP, {**ident, "link": str(link.link)}, int(link.up))
    for kind, count in device.nvlink_errors:
        add(m.NVLINK_ERRORS, {**ident, "type": kind}, count)
    add(m.NVLINK_DATA, {**ident, "direction": "transmit"}, _scaled(device.nvlink_tx_kib, KIB))
    add(m.NVLINK_DATA, {**ident, "direction": "receive"}, _scaled(device.nvlink_rx_kib, KIB))
    for kind, count in device.pcie_errors:
        add(m.PCIE_ERRORS, {**ident, "type": kind}, count)
    add(m.PCIE_DATA, {**ident, "direction": "transmit"}, device.pcie_tx_bytes)
    add(m.PCIE_DATA, {**ident, "direction": "receive"}, device.pcie_rx_bytes)


def _scaled(value: int | None, factor: int) -> int | None:
    return value * factor if value is not None else None
