"""Which cgroup directories are containers, Slurm jobs or services: the naming of kubelet, the container runtimes
and Slurm, as those projects document it. Pure functions of path components; nothing here reads a file.

Kubernetes (kubelet ``pkg/kubelet/cm``): pods live under ``kubepods``, below the kubelet's cgroup root when one is
set (``--cgroup-root``/``cgroupRoot``, as kind and several distributions do), in a QoS level for Burstable and
BestEffort pods. The cgroupfs driver joins the names as a path; the systemd driver turns the same names into
nested slices, each carrying its parents' names and with ``-`` in a name escaped to ``_``:

* cgroupfs: ``[/<root>]/kubepods[/burstable|/besteffort]/pod<uid>/<container>``
* systemd:  ``[/<root>.slice]/[<root>-]kubepods.slice/[<root>-]kubepods-<qos>.slice/
  [<root>-]kubepods-<qos>-pod<uid with _>.slice/<container>``

The pod UID is whatever the kubelet uses: an RFC 4122 UUID for API pods, the 32-hex-digit hash of the manifest
for static pods (their mirror pods' API UIDs never name a cgroup), or a UID the manifest itself sets.

Containers in a pod, by runtime: containerd ``cri-containerd-<id>.scope`` (systemd) or ``<id>`` (cgroupfs);
CRI-O ``crio-<id>.scope`` or ``crio-<id>``, with its ``conmon`` in ``crio-conmon-<id>[.scope]`` beside the
container or in ``system.slice``; Docker through cri-dockerd ``docker-<id>.scope`` or ``<id>``.

Outside Kubernetes: Docker ``/docker/<id>`` and ``docker-<id>.scope``; podman ``libpod-<id>`` and
``libpod-<id>.scope`` (``libpod-conmon-<id>.scope`` is its monitor); any other directory named by a 64-hex-digit
container id (containerd's ``/<namespace>/<id>``).

Slurm: cgroup/v1 ``/slurm/uid_<uid>/job_<id>/step_<step>/task_<n>``, ``/slurm_<node>/...`` when several slurmd run
on one node (``CgroupPrepend=/slurm_%n``); cgroup/v2 ``/<slice>/slurmstepd.scope/job_<id>/step_<step>/user/task_<n>``
(``task_special`` for processes added to a step but no task), slurmstepd itself in ``step_<step>/slurm``, idle
stepds in ``slurmstepd.scope/system``; ``<node>_slurmstepd.scope`` when several slurmd share the node; Slurm 26.05
and later name the job directory by its SLUID (``s`` and 13 base-32 digits) unless ``CgroupJobIdPaths=yes``.
Steps are ``step_<n>``, ``step_batch``, ``step_interactive`` and ``step_extern`` (the latter holds a placeholder and
processes adopted by ``pam_slurm_adopt``, which belong to the job too).

A recognised directory is one unit: its statistics are hierarchical, so nothing below it is walked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_ID = "[0-9a-f]{64}"
_SCOPE = re.compile(rf"^(docker|cri-containerd|crio|libpod)-({_ID})\.scope$")
_PREFIXED = re.compile(rf"^(crio|libpod)-({_ID})$")
_HEX_ID = re.compile(rf"^{_ID}$")
_POD_SYSTEMD = re.compile(r"^(?:.+-)?kubepods(?:-(burstable|besteffort))?-pod(.+)\.slice$")
_KUBEPODS_SYSTEMD = re.compile(r"^(?:.+-)?kubepods\.slice$")
_SLURM_V1_TOP = re.compile(r"^slurm(?:_.+)?$")
_SLURM_UID = re.compile(r"^uid_([0-9]+)$")
_SLURM_JOB = re.compile(r"^job_([0-9]+)$")
_SLUID = re.compile(r"^s[0-9A-HJKMNP-TV-Z]{13}$")
_STEPD_SCOPE = re.compile(r"^(?:.+_)?slurmstepd\.scope$")
_SCOPE_RUNTIME = {"docker": "docker", "cri-containerd": "containerd", "crio": "crio", "libpod": "podman"}
_QOS = {"burstable": "Burstable", "besteffort": "BestEffort"}

SLURM_STEP_PREFIX = "step_"
SLURM_STEPD_DIR = "slurm"
"""cgroup/v2: the directory of a step that holds its slurmstepd."""
SLURM_EXTERN_STEP = "step_extern"
SLURMSTEPD = "slurmstepd"
"""The command name (``comm``) of Slurm's step daemon."""


@dataclass(frozen=True)
class Unit:
    """One container, Slurm job or systemd service found in the cgroup tree."""

    kind: str
    """``container``, ``slurm`` or ``service``."""
    ident: str
    """Container id (64 hex digits), Slurm job id (or the job's SLUID where the directory is named by it), or
    service unit name without ``.service``."""
    path: str
    """Cgroup path relative to the hierarchy root, starting with ``/``."""
    runtime: str
    """``docker``, ``containerd``, ``crio``, ``podman``, ``slurm``, ``systemd``, or ``cri`` when the directory name
    alone does not say which runtime runs a Kubernetes container (the runtimes' state decides later)."""
    pod_uid: str | None = None
    qos_class: str | None = None
    slurm_uid: int | None = None
    """The job owner's uid where the path names it (cgroup/v1)."""
    key: str = field(init=False, repr=False, compare=False)
    """``<kind>:<ident>``: what identifies the unit from one cycle to the next."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.kind}:{self.ident}")


def pod_of(parents: Sequence[str]) -> tuple[str | None, str | None]:
    """Pod UID and QoS class from the directories above a container, ``(None, None)`` outside Kubernetes."""
    for depth, part in enumerate(parents):
        match = _POD_SYSTEMD.match(part)
        if match and any(_KUBEPODS_SYSTEMD.match(p) for p in parents[:depth]):
            return match.group(2).replace("_", "-"), _QOS.get(match.group(1) or "", "Guaranteed")
        if part.startswith("pod") and depth > 0:
            above = parents[depth - 1]
            if above == "kubepods":
                return part[3:], "Guaranteed"
            if above in _QOS and depth > 1 and parents[depth - 2] == "kubepods":
                return part[3:], _QOS[above]
    return None, None


def _container(parents: Sequence[str], name: str, path: str) -> Unit | None:
    match = _SCOPE.match(name) or _PREFIXED.match(name)
    if match:
        runtime = _SCOPE_RUNTIME[match.group(1)]
        uid, qos = pod_of(parents) if runtime != "podman" else (None, None)
        return Unit("container", match.group(2), path, runtime, uid, qos)
    if _HEX_ID.match(name):
        uid, qos = pod_of(parents)
        if uid is not None:
            return Unit("container", name, path, "cri", uid, qos)
        return Unit("container", name, path, "docker" if parents[-1:] == ["docker"] else "cri")
    return None


def _slurm_job(parents: Sequence[str], name: str, path: str) -> Unit | None:
    if not parents:
        return None
    job = _SLURM_JOB.match(name)
    if _STEPD_SCOPE.match(parents[-1]):
        if job:
            return Unit("slurm", job.group(1), path, "slurm")
        if _SLUID.match(name):
            return Unit("slurm", name, path, "slurm")
        return None  # system (idle stepds), slurmd
    if job and len(parents) >= 2 and _SLURM_V1_TOP.match(parents[-2]):
        uid = _SLURM_UID.match(parents[-1])
        if uid:
            return Unit("slurm", job.group(1), path, "slurm", slurm_uid=int(uid.group(1)))
    return None


def classify(parents: Sequence[str], name: str, services: frozenset[str]) -> Unit | None:
    """The unit a cgroup directory is, or ``None`` when it is none (then its children are looked at)."""
    path = "/" + "/".join([*parents, name])
    if len(name) >= 64:
        unit = _container(parents, name, path)
        if unit is not None:
            return unit
    if name.startswith(("job_", "s")):
        unit = _slurm_job(parents, name, path)
        if unit is not None:
            return unit
    if name.endswith(".service") and name[: -len(".service")] in services:
        return Unit("service", name[: -len(".service")], path, "systemd")
    return None


def classify_path(path: str, services: frozenset[str]) -> Unit | None:
    """The unit that contains a process whose cgroup path (from ``/proc/<pid>/cgroup``) is ``path``."""
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts)):
        unit = classify(parts[:depth], parts[depth], services)
        if unit is not None:
            return unit
    return None


def is_slurm_top(name: str) -> bool:
    """A cgroup/v1 hierarchy's top directory of Slurm jobs (``slurm``, ``slurm_<node>``)."""
    return bool(_SLURM_V1_TOP.match(name))
