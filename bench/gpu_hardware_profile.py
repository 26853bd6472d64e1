"""One prepared run of the ``gpu`` collector on a host with a real NVIDIA GPU and driver (never in CI).

It collects while the GPUs are idle, then while a small CUDA load it starts itself runs on GPU 0, and records which
series the collector produced (the profiling, NVLink, PCIe and per-process ones in particular), their values in both
phases, and the collector's cost per cycle (wall time, time inside NVML, own overhead per GPU). The load needs only the
driver's ``libcuda.so.1``: a busy FMA kernel (PTX, compiled by the driver) on every SM, and host-to-device copies for
PCIe traffic, for ``--load-seconds``. Nothing on the GPU is configured or changed.

Usage (from the repository root, with the project's virtualenv)::

    python bench/gpu_hardware_profile.py --output "$OUT/gpu_hardware_profile.json"

Exit status 0 when the collector answered; the JSON file holds the figures for the note.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "collectors"))

from pai_monitoring.gpu.collector import GpuCollector, GpuOptions  # noqa: E402
from pai_monitoring.runtime.collector import CollectorContext  # noqa: E402

NEW_FAMILIES = (
    "pai_gpu_profiling_status",
    "pai_gpu_graphics_engine_active_ratio",
    "pai_gpu_sm_active_ratio",
    "pai_gpu_sm_occupancy_ratio",
    "pai_gpu_dram_active_ratio",
    "pai_gpu_pipe_active_ratio",
    "pai_gpu_pcie_throughput_bytes_per_second",
    "pai_gpu_nvlink_throughput_bytes_per_second",
    "pai_gpu_nvlink_link_up",
    "pai_gpu_nvlink_errors_total",
    "pai_gpu_nvlink_data_bytes_total",
    "pai_gpu_pcie_errors_total",
    "pai_gpu_pcie_data_bytes_total",
    "pai_gpu_process_sm_utilization_ratio",
    "pai_gpu_process_memory_utilization_ratio",
)
INTERVAL_SECONDS = 1.0

# A kernel that keeps every thread busy with dependent FMAs for `iters` rounds (PTX for sm_80, which the driver
# compiles for newer GPUs).
PTX = b"""
.version 7.0
.target sm_80
.address_size 64
.visible .entry spin(.param .u64 out, .param .u32 iters)
{
  .reg .pred p;
  .reg .f32 a, b, c;
  .reg .u32 i, n, t;
  .reg .u64 addr;
  ld.param.u64 addr, [out];
  ld.param.u32 n, [iters];
  mov.u32 t, %tid.x;
  cvt.rn.f32.u32 a, t;
  mov.f32 b, 0f3F800000;
  mov.f32 c, 0f3F000000;
  mov.u32 i, 0;
LOOP:
  fma.rn.f32 a, a, b, c;
  fma.rn.f32 b, b, c, a;
  add.u32 i, i, 1;
  setp.lt.u32 p, i, n;
  @p bra LOOP;
  cvta.to.global.u64 addr, addr;
  st.global.f32 [addr], a;
  ret;
}
\x00"""


class CudaLoad:
    """A CUDA load on device 0 through the driver API, in a thread, until stopped."""

    def __init__(self) -> None:
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA's device 0 is NVML's index 0
        self.cuda = ctypes.CDLL("libcuda.so.1")
        self.stop = threading.Event()
        self.launches = 0
        self.copied_bytes = 0
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="cuda-load", daemon=True)

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            raise RuntimeError(f"{what} failed with CUDA error {result}")

    def _run(self) -> None:
        try:
            self._load()
        except (RuntimeError, OSError) as exc:
            self.error = str(exc)

    def _load(self) -> None:
        cu = self.cuda
        device, context, module, function = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        self._check(cu.cuInit(0), "cuInit")
        self._check(cu.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
        self._check(cu.cuCtxCreate_v2(ctypes.byref(context), 0, device), "cuCtxCreate")
        try:
            self._check(cu.cuModuleLoadData(ctypes.byref(module), PTX), "cuModuleLoadData")
            self._check(cu.cuModuleGetFunction(ctypes.byref(function), module, b"spin"), "cuModuleGetFunction")
            out, staging = ctypes.c_uint64(), ctypes.c_uint64()
            size = 256 << 20
            host = ctypes.create_string_buffer(size)
            self._check(cu.cuMemAlloc_v2(ctypes.byref(out), ctypes.c_size_t(4)), "cuMemAlloc")
            self._check(cu.cuMemAlloc_v2(ctypes.byref(staging), ctypes.c_size_t(size)), "cuMemAlloc")
            iters = ctypes.c_uint32(200_000)
            params = (ctypes.c_void_p * 2)(ctypes.cast(ctypes.byref(out), ctypes.c_void_p),
                                          ctypes.cast(ctypes.byref(iters), ctypes.c_void_p))  # fmt: skip
            while not self.stop.is_set():
                self._check(cu.cuLaunchKernel(function, 1024, 1, 1, 256, 1, 1, 0, None, params, None), "cuLaunchKernel")
                self._check(cu.cuMemcpyHtoD_v2(staging, host, ctypes.c_size_t(size)), "cuMemcpyHtoD")
                self._check(cu.cuCtxSynchronize(), "cuCtxSynchronize")
                self.launches += 1
                self.copied_bytes += size
            cu.cuMemFree_v2(out)
            cu.cuMemFree_v2(staging)
        finally:
            cu.cuCtxDestroy_v2(context)


def flatten(families: Iterable[Any]) -> dict[str, float]:
    return {
        s.name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}": float(s.value)
        for f in families
        for s in f.samples
    }


def phase(collector: GpuCollector, cycles: int, gpus: int) -> dict[str, Any]:
    """Collect `cycles` times at the collector's interval; the last collection's series and the cost per cycle."""
    walls: list[float] = []
    library: list[float] = []
    calls: list[int] = []
    found: dict[str, float] = {}
    for _ in range(cycles):
        started = time.monotonic()
        begin = time.perf_counter()
        found = flatten(collector.collect())
        walls.append(time.perf_counter() - begin)
        snapshot = collector.last_snapshot
        if snapshot is not None:
            library.append(snapshot.library_seconds)
            calls.append(snapshot.nvml_calls)
        time.sleep(max(0.0, started + INTERVAL_SECONDS - time.monotonic()))
    overhead = [w - lib for w, lib in zip(walls, library, strict=False)]
    return {
        "series": {k: v for k, v in found.items() if k.split("{")[0] in NEW_FAMILIES},
        "cycle_ms_median": statistics.median(walls) * 1e3,
        "library_ms_median": statistics.median(library) * 1e3 if library else None,
        "nvml_calls_per_gpu": statistics.mean(calls) / gpus if calls and gpus else None,
        "overhead_ms_per_gpu": statistics.median(overhead) * 1e3 / gpus if overhead and gpus else None,
        "all_families": sorted({k.split("{")[0] for k in found}),
    }


def loaded_phase(collector: GpuCollector, cycles: int, gpus: int) -> dict[str, Any]:
    """The phase under a CUDA load; without one (no libcuda, a CUDA error) what went wrong instead."""
    try:
        load = CudaLoad()
    except OSError as exc:
        return {"load_generator": {"error": f"cannot load libcuda.so.1: {exc}"}}
    load.thread.start()
    time.sleep(2 * INTERVAL_SECONDS)  # let the load reach its steady state before the window opens
    figures = phase(collector, cycles, gpus)
    load.stop.set()
    load.thread.join(timeout=60)
    generator = {"launches": load.launches, "copied_bytes": load.copied_bytes, "error": load.error}
    return {"load": figures, "load_generator": generator}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=10, help="collections per phase, one a second")
    parser.add_argument("--output", type=Path, default=Path("gpu_hardware_profile.json"))
    parser.add_argument("--no-load", action="store_true", help="only the idle phase")
    args = parser.parse_args()
    collector = GpuCollector(GpuOptions(timeout=30.0), CollectorContext(node_name=os.uname().nodename))
    report: dict[str, Any] = {"host": os.uname().nodename}
    try:
        first = flatten(collector.collect())
        snapshot = collector.last_snapshot
        if snapshot is None or snapshot.status != "ok":
            report["error"] = f"NVML did not answer: {snapshot}"
            args.output.write_text(json.dumps(report, indent=2) + "\n")
            sys.stdout.write(report["error"] + "\n")
            return 1
        gpus = len(snapshot.devices)
        report.update(
            driver=snapshot.driver_version,
            cuda=snapshot.cuda_version,
            gpus=[{"index": d.index, "name": d.name, "uuid": d.uuid, "mig": d.mig_mode} for d in snapshot.devices],
            first_collection_status={k: v for k, v in first.items() if k.startswith("pai_gpu_profiling_status")},
        )
        time.sleep(INTERVAL_SECONDS)
        report["idle"] = phase(collector, args.cycles, gpus)
        if not args.no_load:
            report.update(loaded_phase(collector, args.cycles, gpus))
    finally:
        collector.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    for name in ("idle", "load"):
        if name in report:
            figures = {k: report[name][k] for k in ("cycle_ms_median", "library_ms_median", "overhead_ms_per_gpu")}
            sys.stdout.write(f"{name}: {figures}, {len(report[name]['series'])} new series\n")
    sys.stdout.write(f"written to {args.output}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
