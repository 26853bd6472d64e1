"""Data that one collector publishes for another, with the keys it is published under.

The GPU collector publishes :data:`GPU_STATE` after each successful NVML read; the jobs collector reads it to
attribute GPU utilisation and memory to jobs. The jobs collector publishes :data:`JOB_INDEX` after each cycle;
``node_health`` reads it (and ``GPU_STATE``) to name the job and GPU of a process it reports. Only plain frozen
dataclasses cross this boundary, so a collector that runs NVML in a worker process can rebuild them from what the
worker sends back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pai_monitoring.runtime.board import SharedKey


@dataclass(frozen=True)
class GpuProcess:
    """One process holding a GPU context, as NVML reports it (host PID)."""

    pid: int
    minor_number: str
    used_memory_bytes: int | None
    """GPU memory used by the process; ``None`` where the driver does not say (MIG without privileges)."""
    sm_utilization_percent: float | None = None
    """Share of the GPU collector's last interval in which the process's kernels ran, 0-100 (the mean of the driver's
    per-process samples); ``None`` where the driver does not say (MIG mode, drivers without per-process figures)."""
    memory_utilization_percent: float | None = None
    """The same for the process's device memory reads and writes, 0-100."""


@dataclass(frozen=True)
class GpuDevice:
    """One physical GPU, or ``lost`` when it has fallen off the bus."""

    index: int
    minor_number: str
    uuid: str
    utilization_gpu_percent: float | None
    """Core utilisation 0-100; ``None`` when the driver does not report it (MIG mode, old cards)."""
    memory_used_percent: float | None
    """Framebuffer used / total x 100 (the original's ``nvidiasmi_utilization_memory``)."""
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    mig_device_uuids: tuple[str, ...] = ()
    """UUIDs of the MIG devices on this GPU (``MIG-...``), empty when MIG is off."""
    lost: bool = False
    sm_active_ratio: float | None = None
    """Share of the SMs busy over the GPU collector's last interval, 0-1 (NVML GPM, Hopper and newer); ``None``
    elsewhere and in MIG mode."""
    power_watts: float | None = None
    energy_joules: float | None = None
    """Energy the GPU used since the driver loaded (a counter); ``None`` where the GPU does not report it."""


@dataclass(frozen=True)
class GpuState:
    """Everything the GPU collector saw in one iteration."""

    devices: tuple[GpuDevice, ...]
    processes: tuple[GpuProcess, ...]

    def device_by_id(self, ident: str) -> GpuDevice | None:
        """Find a GPU by index (``"0"``), UUID (``"GPU-..."``) or MIG device UUID (``"MIG-..."``)."""
        for device in self.devices:
            if ident in (str(device.index), device.uuid) or ident in device.mig_device_uuids:
                return device
        return None


GPU_STATE: SharedKey[GpuState] = SharedKey("gpu.state")


@dataclass(frozen=True)
class JobRef:
    """The job a container or Slurm job belongs to, as the jobs collector named it."""

    job_name: str
    username: str
    container_id: str


@dataclass(frozen=True)
class JobIndex:
    """The jobs collector's units by cgroup path, so that a process can be put in its job from its cgroup."""

    controller: str
    """The hierarchy the paths are in, as ``/proc/<pid>/cgroup`` names it (``""`` for cgroup v2)."""
    units: Mapping[str, JobRef]
    """Cgroup path of each unit (``/kubepods.slice/.../cri-containerd-<id>.scope``) -> its job."""

    def find(self, path: str) -> JobRef | None:
        """The job of the unit containing the cgroup at ``path`` (a unit's own path or one below it)."""
        probe = path
        while probe:
            ref = self.units.get(probe)
            if ref is not None:
                return ref
            probe = probe.rpartition("/")[0]
        return None


JOB_INDEX: SharedKey[JobIndex] = SharedKey("jobs.index")
