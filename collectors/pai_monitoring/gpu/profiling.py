"""Names of what the NVML worker profiles, shared by the worker (which reads them) and the metric families.

This module imports nothing from NVML: the exporter process builds families from these names without loading
``pynvml``. Which NVML identifier each name is read from is written down once, in the worker's modules
(:mod:`pai_monitoring.gpu.gpm` and :mod:`pai_monitoring.gpu.fields`), with the constants of the installed binding.
"""

from __future__ import annotations

GPM_KEYS: tuple[str, ...] = (
    "graphics_engine",
    "sm",
    "sm_occupancy",
    "dram",
    "pipe_tensor",
    "pipe_tensor_dfma",
    "pipe_tensor_dmma",
    "pipe_tensor_hmma",
    "pipe_tensor_imma",
    "pipe_fp64",
    "pipe_fp32",
    "pipe_fp16",
    "pipe_integer",
    "pcie_tx",
    "pcie_rx",
    "nvlink_tx",
    "nvlink_rx",
)
"""GPM metrics: activity ratios (NVML gives percent) and PCIe and NVLink throughput (NVML gives MiB/s)."""

NVLINK_ERROR_TYPES: tuple[str, ...] = ("crc", "crc_data", "replay", "recovery")
"""NVLink error counters. ``crc``: flow-control (flit) CRC errors, what Hopper reports as data-link CRC errors;
``crc_data``: data CRC errors (before Hopper only); ``replay``: retransmissions; ``recovery``: link retraining."""

PCIE_ERROR_TYPES: tuple[str, ...] = (
    "correctable",
    "receiver",
    "bad_tlp",
    "bad_dllp",
    "lcrc",
    "nak_received",
    "nak_sent",
    "replay_rollover",
    "l0_to_recovery",
    "non_fatal",
    "fatal",
    "unsupported_request",
)
"""PCIe error counters of the GPU's link (drivers from R535; ``replay_rollover`` on all)."""
