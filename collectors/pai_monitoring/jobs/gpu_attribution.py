"""Which GPUs a job uses, and which unit each GPU process belongs to: the one place GPU attribution is decided.

Interface (what :mod:`.collector` and :mod:`.derive` use, and what a per-process figure such as GPU utilisation
per process plugs into: it arrives on :class:`~pai_monitoring.shared_model.GpuProcess` and follows the process):

* :func:`locate_processes` gives each process NVML lists on a GPU with the unit its cgroup lies in (``None``: in
  no container, Slurm job or listed service); a process that exited before its cgroup was read is left out.
* :func:`unit_gpus` gives the GPUs (by ``minor_number``) one unit uses:

  1. a cgroup v1 device allow list (``devices.list``) that does not allow everything names the NVIDIA minors
     (major 195) the job may open; when present it is the job's set;
  2. otherwise ``NVIDIA_VISIBLE_DEVICES`` (indices, ``GPU-`` UUIDs, ``MIG-`` UUIDs; ``all`` = every GPU;
     ``none``, ``void`` and empty = no GPU), narrowed by ``CUDA_VISIBLE_DEVICES`` when both are set, or
     ``CUDA_VISIBLE_DEVICES`` alone (Slurm); the YARN-era ``GPU_ID`` label the same way;
  3. plus every GPU where NVML reports a process of the unit.

GPUs are named by ``minor_number``, the label the GPU collector uses; indices and UUIDs are resolved through the GPU
collector's device list, so the minor number is right even where it differs from the index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pai_monitoring.jobs.layouts import Unit
from pai_monitoring.shared_model import GpuProcess, GpuState

NVIDIA_MAJOR = "195"
_CONTROL_MINORS = frozenset({"254", "255"})  # nvidia-modeset, nvidiactl
_NO_GPU = frozenset({"none", "void", "", "nodevfiles", "-1"})


def allowed_minors(devices_list: bytes | None) -> frozenset[str] | None:
    """NVIDIA minors a v1 ``devices.list`` allows; ``None`` when it allows every device or cannot be read."""
    if devices_list is None:
        return None
    minors: set[str] = set()
    for line in devices_list.decode("ascii", "replace").splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        kind, numbers, _ = fields
        major, _, minor = numbers.partition(":")
        if kind == "a" or (major in (NVIDIA_MAJOR, "*") and minor == "*"):
            return None
        if kind == "c" and major == NVIDIA_MAJOR and minor not in _CONTROL_MINORS:
            minors.add(minor)
    return frozenset(minors)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _resolve(ids: list[str], state: GpuState) -> list[str]:
    minors = []
    for ident in ids:
        device = state.device_by_id(ident)
        if device is not None and device.minor_number not in minors:
            minors.append(device.minor_number)
    return minors


def visible_minors(env: Mapping[str, str], state: GpuState) -> frozenset[str] | None:
    """Minors named by the environment (see the module docstring); ``None`` when no variable is set."""
    nvidia = env.get("NVIDIA_VISIBLE_DEVICES", env.get("GPU_ID"))
    cuda = env.get("CUDA_VISIBLE_DEVICES")
    if nvidia is None and cuda is None:
        return None
    if nvidia is not None:
        if nvidia.strip().lower() in _NO_GPU:
            return frozenset()
        base = [str(d.index) for d in state.devices] if nvidia.strip().lower() == "all" else _split(nvidia)
        if cuda is None:
            return frozenset(_resolve(base, state))
        if cuda.strip().lower() in _NO_GPU:
            return frozenset()
        # CUDA indices count within the container's visible GPUs; UUIDs name a GPU directly.
        picked = [base[int(c)] if c.isdigit() and int(c) < len(base) else c for c in _split(cuda)]
        return frozenset(_resolve(picked, state))
    assert cuda is not None
    if cuda.strip().lower() in _NO_GPU:
        return frozenset()
    return frozenset(_resolve(_split(cuda), state))


def unit_gpus(
    devices_list: bytes | None, env: Mapping[str, str], processes: list[GpuProcess], state: GpuState
) -> frozenset[str]:
    """The GPUs a unit uses: device cgroup, else environment, plus the GPUs its processes hold."""
    existing = frozenset(d.minor_number for d in state.devices if not d.lost)
    allowed = allowed_minors(devices_list)
    declared = allowed if allowed is not None else visible_minors(env, state)
    return ((declared or frozenset()) | frozenset(p.minor_number for p in processes)) & existing


@dataclass(frozen=True)
class ProcessOwner:
    process: GpuProcess
    unit: Unit | None
    """The unit whose cgroup holds the process; ``None`` when it lies in none."""


def locate_processes(
    state: GpuState, cgroup_paths: Callable[[int], list[str] | None], unit_at: Callable[[str], Unit | None]
) -> list[ProcessOwner]:
    """Each GPU process with its unit. ``cgroup_paths(pid)`` gives the process's cgroup paths, best first (``None``
    once it has exited: then it is left out, it holds no GPU any more); ``unit_at(path)`` the unit containing a
    cgroup, if any."""
    owners = []
    for process in state.processes:
        paths = cgroup_paths(process.pid)
        if paths is None:
            continue
        unit = next((u for u in map(unit_at, paths) if u is not None), None)
        owners.append(ProcessOwner(process, unit))
    return owners
