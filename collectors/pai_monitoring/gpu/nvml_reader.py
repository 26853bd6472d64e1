"""Reading GPUs through ``pynvml``: the thin adapter between NVML and our snapshot dataclasses.

Runs only inside the worker process (:mod:`pai_monitoring.gpu.worker`), never in the exporter itself, because any
call here can block inside the driver.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

import pynvml

from pai_monitoring.gpu.calls import CallCounter
from pai_monitoring.gpu.fields import FieldReader
from pai_monitoring.gpu.gpm import GpmSampler
from pai_monitoring.gpu.model import (
    DeviceReading,
    MigReading,
    ProcessReading,
    Snapshot,
    UnreadableError,
    XidCount,
)
from pai_monitoring.gpu.process_util import ProcessUtilReader, Utilization
from pai_monitoring.gpu.worker_log import log

PSTATE_UNKNOWN = 32
XID_WAIT_MS = 500
# pynvml's version tag of nvmlMemory_v2_t; absent from bindings older than the driver call.
MEMORY_V2: int | None = getattr(pynvml, "nvmlMemory_v2", None)
ERROR_CLASSES: dict[int, UnreadableError] = {
    pynvml.NVML_ERROR_NO_PERMISSION: "no_permission",
    pynvml.NVML_ERROR_NOT_FOUND: "not_found",
    pynvml.NVML_ERROR_INSUFFICIENT_POWER: "insufficient_power",
    pynvml.NVML_ERROR_IRQ_ISSUE: "irq_issue",
    pynvml.NVML_ERROR_RESET_REQUIRED: "reset_required",
    pynvml.NVML_ERROR_TIMEOUT: "timeout",
    pynvml.NVML_ERROR_UNKNOWN: "unknown",
}


class MemoryReading(NamedTuple):
    total: int
    used: int
    """Allocated by processes and contexts, without the driver's reserved memory."""
    reserved: int | None


def memory_v2(info: Any) -> MemoryReading:
    """A v2 answer: in use is what is neither free nor reserved.

    NVML's documents disagree on whether v2's ``used`` includes ``reserved`` (the R525 notes say it does, later ones
    and ``nvidia-smi`` treat it apart); ``total - free - reserved`` is right under either reading.
    """
    total, free, reserved = int(info.total), int(info.free), int(info.reserved)
    return MemoryReading(total, max(0, total - free - reserved), reserved)


def memory_v1(info: Any) -> MemoryReading:
    """A v1 answer, used only on drivers without v2 (before R510), which keep the reserved memory out of ``total``."""
    return MemoryReading(int(info.total), int(info.used), None)


def cuda_version_text(version: int) -> str:
    """NVML's CUDA driver version (``12040``) as ``12.4``."""
    return f"{version // 1000}.{version % 1000 // 10}"


def mig_profile(name: str) -> str:
    """The profile of a MIG device from its name (``NVIDIA A100-SXM4-40GB MIG 1g.5gb`` -> ``1g.5gb``)."""
    _, sep, profile = name.partition(" MIG ")
    return profile.strip() if sep else name


def with_utilization(
    processes: tuple[ProcessReading, ...], utilization: dict[int, Utilization] | None
) -> tuple[ProcessReading, ...]:
    """The processes with their utilisation; a listed process without samples since the last collection ran 0 %."""
    if utilization is None:
        return processes
    idle = Utilization(0.0, 0.0)
    return tuple(
        p._replace(sm_utilization_percent=u.sm_percent, memory_utilization_percent=u.memory_percent)
        for p, u in ((p, utilization.get(p.pid, idle)) for p in processes)
    )


def error_class(exc: pynvml.NVMLError) -> UnreadableError:
    """The bounded class of an NVML error that keeps a GPU from being read (a label value, not the message)."""
    return ERROR_CLASSES.get(int(exc.value), "other")


def handle_key(handle: Any) -> int:
    """A device handle's address, to recognise the device an event came from."""
    return int(ctypes.cast(handle, ctypes.c_void_p).value or 0)


class XidWatcher:
    """Counts Xid events per (minor number, Xid code) from an NVML event set, in a background thread.

    The event set is created in the constructor and each GPU registered when :meth:`register` first sees its handle
    (GPUs of the first snapshot, and those that appear or become readable later), so every event of a GPU after its
    registration is seen. Counts are cumulative for the life of this process.
    """

    def __init__(self) -> None:
        self._minor_by_handle: dict[int, str] = {}
        self._seen: set[int] = set()
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], tuple[int, float]] = {}
        self._stop = threading.Event()
        self._event_set = pynvml.nvmlEventSetCreate()
        self._thread = threading.Thread(target=self._run, name="nvml-xid-events", daemon=True)
        self._thread.start()

    def register(self, handles: Iterable[tuple[Any, str | None]]) -> None:
        """Register the GPUs of these (handle, minor number) pairs that were not offered before, once each."""
        for handle, minor in handles:
            key = handle_key(handle)
            if minor is not None:
                with self._lock:
                    self._minor_by_handle[key] = minor
            if key in self._seen:
                continue
            self._seen.add(key)
            try:
                pynvml.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, self._event_set)
            except pynvml.NVMLError as exc:
                log.info("Xid events not available on GPU /dev/nvidia%s: %s", minor, exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = pynvml.nvmlEventSetWait_v2(self._event_set, XID_WAIT_MS)
            except pynvml.NVMLError_Timeout:
                continue
            except pynvml.NVMLError as exc:
                log.warning("waiting for NVML events failed: %s", exc)
                self._stop.wait(5.0)
                continue
            if data.eventType & pynvml.nvmlEventTypeXidCriticalError:
                with self._lock:
                    minor = self._minor_by_handle.get(handle_key(data.device), "unknown")
                    key = (minor, int(data.eventData))
                    count, _ = self._counts.get(key, (0, 0.0))
                    self._counts[key] = (count + 1, time.time())

    def totals(self) -> tuple[XidCount, ...]:
        with self._lock:
            items = sorted(self._counts.items())
        return tuple(XidCount(minor, xid, count, last) for (minor, xid), (count, last) in items)

    def stop(self) -> None:
        self._stop.set()


class NvmlSession:
    """An initialised NVML library and what stays constant while it is: versions, minor numbers, the Xid watcher."""

    def __init__(self) -> None:
        self.initialised = False
        self.driver_version: str | None = None
        self.cuda_version: str | None = None
        self._minor_cache: dict[int, int] = {}
        self._uuid_cache: dict[int, str] = {}
        self._use_event_reasons = True
        self._use_memory_v2 = MEMORY_V2 is not None
        self._xid: XidWatcher | None = None
        self._gpm = GpmSampler()
        self._fields = FieldReader()
        self._process_util = ProcessUtilReader()

    def _init(self) -> Snapshot | None:
        """Initialise NVML; a snapshot describing the failure when it cannot be."""
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound as exc:
            return Snapshot(status="library_not_found", detail=str(exc))
        except pynvml.NVMLError_DriverNotLoaded as exc:
            return Snapshot(status="driver_not_loaded", detail=str(exc))
        except pynvml.NVMLError as exc:
            return Snapshot(status="error", detail=f"nvmlInit: {exc}")
        self.initialised = True
        counter = CallCounter()
        version = counter.optional(pynvml.nvmlSystemGetDriverVersion)
        self.driver_version = str(version) if version is not None else None
        cuda = counter.optional(pynvml.nvmlSystemGetCudaDriverVersion_v2)
        self.cuda_version = cuda_version_text(int(cuda)) if cuda is not None else None
        return None

    def _watch_xids(self, handles: dict[int, Any], devices: tuple[DeviceReading, ...]) -> None:
        """Have the Xid watcher (started on the first snapshot) register the GPUs it does not know yet."""
        if self._xid is None:
            try:
                self._xid = XidWatcher()
            except pynvml.NVMLError as exc:
                log.warning("NVML events are not available, Xid errors will not be counted: %s", exc)
                return
        minors = {d.index: str(d.minor_number) for d in devices if d.minor_number is not None}
        self._xid.register((handle, minors.get(index)) for index, handle in handles.items())

    def snapshot(self) -> Snapshot:
        if not self.initialised:
            failure = self._init()
            if failure is not None:
                return failure
        counter = CallCounter()
        try:
            count = int(counter(pynvml.nvmlDeviceGetCount))
        except pynvml.NVMLError as exc:
            return Snapshot(status="error", detail=f"nvmlDeviceGetCount: {exc}")
        handles: dict[int, Any] = {}
        devices = tuple(self._read_device(counter, index, handles) for index in range(count))
        self._gpm.end_cycle()
        self._watch_xids(handles, devices)
        return Snapshot(
            status="ok",
            driver_version=self.driver_version,
            cuda_version=self.cuda_version,
            devices=devices,
            xids=self._xid.totals() if self._xid is not None else (),
            nvml_calls=counter.calls,
            library_seconds=counter.seconds,
        )

    def _read_device(self, call: CallCounter, index: int, handles: dict[int, Any]) -> DeviceReading:
        try:
            handle = call(pynvml.nvmlDeviceGetHandleByIndex, index)
            handles[index] = handle
            return self._read_handle(call, index, handle)
        except pynvml.NVMLError_GpuIsLost:
            self._gpm.forget_device(index)
            return DeviceReading(
                index=index, lost=True, minor_number=self._minor_cache.get(index), uuid=self._uuid_cache.get(index)
            )
        except pynvml.NVMLError as exc:
            return DeviceReading(index=index, error=str(exc), error_class=error_class(exc))

    def _clock_event_reasons(self, call: CallCounter, handle: Any) -> int | None:
        if self._use_event_reasons:
            try:
                return int(call(pynvml.nvmlDeviceGetCurrentClocksEventReasons, handle))
            except pynvml.NVMLError_FunctionNotFound:
                self._use_event_reasons = False  # a driver older than the "clock event" naming
            except pynvml.NVMLError_GpuIsLost:
                raise
            except pynvml.NVMLError:
                return None
        value = call.optional(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons, handle)
        return int(value) if value is not None else None

    def _memory(self, call: CallCounter, handle: Any) -> MemoryReading | None:
        """Memory of a GPU or MIG device; v2 (reserved memory apart) where the driver has it, else v1."""
        if self._use_memory_v2:
            try:
                return memory_v2(call(pynvml.nvmlDeviceGetMemoryInfo, handle, MEMORY_V2))
            except (pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_ArgumentVersionMismatch):
                log.info("nvmlDeviceGetMemoryInfo_v2 not available; memory in use comes from v1")
                self._use_memory_v2 = False  # a driver before R510: the same answer for every GPU
            except pynvml.NVMLError_GpuIsLost:
                raise
            except pynvml.NVMLError as exc:
                log.debug("nvmlDeviceGetMemoryInfo_v2: %s", exc)
                return None
        info = call.optional(pynvml.nvmlDeviceGetMemoryInfo, handle)
        return memory_v1(info) if info is not None else None

    def _read_handle(self, call: CallCounter, index: int, handle: Any) -> DeviceReading:
        opt = call.optional
        minor = opt(pynvml.nvmlDeviceGetMinorNumber, handle)
        uuid = opt(pynvml.nvmlDeviceGetUUID, handle)
        if minor is not None:
            self._minor_cache[index] = int(minor)
        if uuid is not None:
            self._uuid_cache[index] = str(uuid)
        pci = opt(pynvml.nvmlDeviceGetPciInfo, handle)
        util = opt(pynvml.nvmlDeviceGetUtilizationRates, handle)
        memory = self._memory(call, handle)
        ecc_corrected = opt(
            pynvml.nvmlDeviceGetTotalEccErrors,
            handle,
            pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
            pynvml.NVML_VOLATILE_ECC,
        )
        ecc_uncorrected = opt(
            pynvml.nvmlDeviceGetTotalEccErrors,
            handle,
            pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            pynvml.NVML_VOLATILE_ECC,
        )
        single = opt(
            pynvml.nvmlDeviceGetRetiredPages, handle, pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS
        )
        double = opt(pynvml.nvmlDeviceGetRetiredPages, handle, pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
        retired_pending = opt(pynvml.nvmlDeviceGetRetiredPagesPendingStatus, handle)
        remap = opt(pynvml.nvmlDeviceGetRemappedRows, handle)
        pstate = opt(pynvml.nvmlDeviceGetPerformanceState, handle)
        mig_mode = opt(pynvml.nvmlDeviceGetMigMode, handle)
        mig_on = bool(mig_mode[0]) if mig_mode is not None else None
        processes, listed = self._read_processes(call, handle)
        if listed and not mig_on:
            processes = with_utilization(processes, self._process_util.read(call, index, handle))
        migs = self._read_mig(call, handle) if mig_on else ()
        instances = (m.gpu_instance_id for m in migs if m.gpu_instance_id is not None)
        gpm, instance_gpm = self._gpm.read(call, index, handle, mig_on, instances)
        fields = self._fields.read(call, index, str(uuid) if uuid is not None else None, handle)
        return DeviceReading(
            index=index,
            minor_number=int(minor) if minor is not None else None,
            uuid=str(uuid) if uuid is not None else None,
            pci_bus_id=_text(pci.busId) if pci is not None else None,
            name=_text(opt(pynvml.nvmlDeviceGetName, handle)),
            utilization_gpu_percent=int(util.gpu) if util is not None else None,
            memory_total_bytes=memory.total if memory is not None else None,
            memory_used_bytes=memory.used if memory is not None else None,
            memory_reserved_bytes=memory.reserved if memory is not None else None,
            temperature_celsius=_int(opt(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU)),
            power_milliwatts=_int(opt(pynvml.nvmlDeviceGetPowerUsage, handle)),
            power_limit_milliwatts=_int(opt(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)),
            energy_millijoules=_int(opt(pynvml.nvmlDeviceGetTotalEnergyConsumption, handle)),
            sm_clock_mhz=_int(opt(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM)),
            memory_clock_mhz=_int(opt(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_MEM)),
            fan_percent=_int(opt(pynvml.nvmlDeviceGetFanSpeed, handle)),
            pcie_replay_count=_int(opt(pynvml.nvmlDeviceGetPcieReplayCounter, handle)),
            ecc_corrected_volatile=_int(ecc_corrected),
            ecc_uncorrected_volatile=_int(ecc_uncorrected),
            retired_pages_single_bit=len(single) if single is not None else None,
            retired_pages_double_bit=len(double) if double is not None else None,
            retired_pages_pending=bool(retired_pending) if retired_pending is not None else None,
            remapped_rows_correctable=int(remap[0]) if remap is not None else None,
            remapped_rows_uncorrectable=int(remap[1]) if remap is not None else None,
            remapped_rows_pending=bool(remap[2]) if remap is not None else None,
            remapped_rows_failure=bool(remap[3]) if remap is not None else None,
            clock_event_reasons=self._clock_event_reasons(call, handle),
            performance_state=int(pstate) if pstate is not None and int(pstate) != PSTATE_UNKNOWN else None,
            mig_mode=mig_on,
            mig_devices=migs,
            processes=processes,
            processes_listed=listed,
            gpm=gpm,
            instance_gpm=instance_gpm,
            nvlinks=fields.nvlinks,
            nvlink_errors=fields.nvlink_errors,
            nvlink_tx_kib=fields.nvlink_tx_kib,
            nvlink_rx_kib=fields.nvlink_rx_kib,
            pcie_errors=fields.pcie_errors,
            pcie_tx_bytes=fields.pcie_tx_bytes,
            pcie_rx_bytes=fields.pcie_rx_bytes,
        )

    def _read_processes(self, call: CallCounter, handle: Any) -> tuple[tuple[ProcessReading, ...], bool]:
        """The GPU's processes, and whether the driver listed them at all (both lists refused: unknown)."""
        found: dict[int, ProcessReading] = {}
        listed = False
        for fn, graphics in (
            (pynvml.nvmlDeviceGetComputeRunningProcesses, False),
            (pynvml.nvmlDeviceGetGraphicsRunningProcesses, True),
        ):
            procs = call.optional(fn, handle)
            listed = listed or procs is not None
            for proc in procs or ():
                pid = int(proc.pid)
                used = int(proc.usedGpuMemory) if proc.usedGpuMemory is not None else None
                if pid in found and found[pid].used_memory_bytes is not None and used is not None:
                    used = max(used, found[pid].used_memory_bytes or 0)
                if pid not in found or used is not None:
                    found[pid] = ProcessReading(pid=pid, used_memory_bytes=used, graphics=graphics)
        return tuple(found[pid] for pid in sorted(found)), listed

    def _read_mig(self, call: CallCounter, handle: Any) -> tuple[MigReading, ...]:
        opt = call.optional
        slots = opt(pynvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
        result: list[MigReading] = []
        for slot in range(int(slots)):
            mig = opt(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot)
            if mig is None:
                continue
            uuid = opt(pynvml.nvmlDeviceGetUUID, mig)
            memory = self._memory(call, mig)
            name = _text(opt(pynvml.nvmlDeviceGetName, mig))
            result.append(
                MigReading(
                    uuid=str(uuid) if uuid is not None else f"slot-{slot}",
                    gpu_instance_id=_int(opt(pynvml.nvmlDeviceGetGpuInstanceId, mig)),
                    compute_instance_id=_int(opt(pynvml.nvmlDeviceGetComputeInstanceId, mig)),
                    profile=mig_profile(name) if name else "",
                    memory_used_bytes=memory.used if memory is not None else None,
                    memory_total_bytes=memory.total if memory is not None else None,
                )
            )
        return tuple(result)

    def close(self) -> None:
        if self._xid is not None:
            self._xid.stop()
        if self.initialised:
            self._gpm.close()
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as exc:
                log.debug("nvmlShutdown: %s", exc)


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
