"""Which GPUs a job uses: from its device cgroup, its environment, and the GPU processes inside it.

1. A cgroup v1 device allow list (``devices.list``) that does not allow everything names the NVIDIA minors
   (major 195) the job may open; when present it is the job's set.
2. Otherwise ``NVIDIA_VISIBLE_DEVICES`` (indices, ``GPU-`` UUIDs, ``MIG-`` UUIDs; ``all`` = every GPU;
   ``none``, ``void`` and empty = no GPU), narrowed by ``CUDA_VISIBLE_DEVICES`` when both are set, or
   ``CUDA_VISIBLE_DEVICES`` alone (Slurm); the YARN-era ``GPU_ID`` label the same way.
3. Every GPU where NVML reports a process of the job is added.

GPUs are named by ``minor_number``, the label the GPU collector uses.
"""

from __future__ import annotations

from collections.abc import Mapping

from pai_monitoring.shared_model import GpuState

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


def job_minors(
    devices_list: bytes | None, env: Mapping[str, str], process_minors: frozenset[str], state: GpuState
) -> frozenset[str]:
    """The GPUs a job uses: device cgroup, else environment, plus the GPUs its processes hold."""
    existing = frozenset(d.minor_number for d in state.devices if not d.lost)
    allowed = allowed_minors(devices_list)
    declared = allowed if allowed is not None else visible_minors(env, state)
    return ((declared or frozenset()) | process_minors) & existing
