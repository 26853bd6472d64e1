"""Where the cgroup hierarchies are, and which of their directories are containers, jobs or services.

Recognised directory names (cgroup v1 and v2, cgroupfs and systemd drivers):

* docker: ``/docker/<id>`` and ``docker-<id>.scope``;
* containerd/CRI (Kubernetes): ``.../kubepods[/<qos>]/pod<uid>/<id>`` and
  ``kubepods[-<qos>]-pod<uid>.slice/cri-containerd-<id>.scope`` (also ``crio-<id>.scope``, ``docker-<id>.scope``);
* podman: ``libpod-<id>`` (cgroupfs) and ``libpod-<id>.scope`` (systemd);
* any other directory named by a 64-hex-digit id (for example ``/<containerd namespace>/<id>``);
* Slurm: ``/slurm[_<node>]/uid_<uid>/job_<id>`` (v1) and ``.../slurmstepd.scope/job_<id>`` (v2);
* systemd services the operator lists: ``<name>.service``.

A recognised directory is one unit: its statistics are hierarchical, so nothing below it is walked.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pai_monitoring.jobs.fastio import read_bytes

_SCOPE = re.compile(r"^(docker|cri-containerd|crio|libpod)-([0-9a-f]{64})\.scope$")
_LIBPOD = re.compile(r"^libpod-([0-9a-f]{64})$")
_HEX_ID = re.compile(r"^[0-9a-f]{64}$")
_SLURM_JOB = re.compile(r"^job_([0-9]+)$")
_SLURM_UID = re.compile(r"^uid_([0-9]+)$")
_POD_CGROUPFS = re.compile(r"^pod([0-9a-f-]{36})$")
_POD_SYSTEMD = re.compile(r"^kubepods(?:-[a-z]+)?-pod([0-9a-f_]{36})\.slice$")
_SCOPE_RUNTIME = {"docker": "docker", "cri-containerd": "containerd", "crio": "crio", "libpod": "podman"}
MAX_DEPTH = 16

# Controllers whose hierarchy (cgroup v1) can be walked to find units, best first.
_WALK_PREFERENCE = ("memory", "pids", "cpuacct", "name=systemd")


@dataclass(frozen=True)
class Unit:
    """One container, Slurm job or systemd service found in the cgroup tree."""

    kind: str
    """``container``, ``slurm`` or ``service``."""
    ident: str
    """Container id (64 hex digits), Slurm job id, or service unit name without ``.service``."""
    path: str
    """Cgroup path relative to the hierarchy root, starting with ``/``."""
    runtime: str
    """``docker``, ``containerd``, ``crio``, ``podman``, ``slurm``, ``systemd``, or ``cri`` when the cgroup name alone
    does not say which runtime runs a Kubernetes container (the runtimes' local state decides later)."""
    pod_uid: str | None = None
    qos_class: str | None = None
    slurm_uid: int | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.ident}"


@dataclass(frozen=True)
class CgroupLayout:
    """The mounted hierarchies: absolute directories, ``None`` where a controller is not mounted."""

    version: int
    walk_root: str
    walk_controller: str
    """How the walked hierarchy appears in ``/proc/<pid>/cgroup``: a v1 controller name, or ``""`` for v2."""
    cpu: str | None
    memory: str | None
    blkio: str | None
    devices: str | None
    slurm_roots: tuple[str, ...] = ()
    """Other v1 hierarchies to look into for Slurm jobs when the walked one has none (Slurm may skip memory)."""


def detect_layout(cgroup_root: str) -> CgroupLayout | None:
    """Find the hierarchies under ``<sys>/fs/cgroup``; ``None`` when nothing is mounted there."""
    if os.path.exists(os.path.join(cgroup_root, "cgroup.controllers")):  # noqa: PTH110, PTH118 - str paths
        return CgroupLayout(2, cgroup_root, "", cgroup_root, cgroup_root, cgroup_root, None)
    try:
        names = [e.name for e in os.scandir(cgroup_root) if e.is_dir()]
    except OSError:
        return None
    by_controller: dict[str, str] = {}
    for name in sorted(names, key=len):
        for controller in name.split(","):
            by_controller.setdefault(controller, os.path.join(cgroup_root, name))  # noqa: PTH118
    if "systemd" in by_controller:
        by_controller.setdefault("name=systemd", by_controller["systemd"])
    walk = next((c for c in _WALK_PREFERENCE if c in by_controller), None)
    if walk is None:
        return None
    slurm_roots = tuple(
        sorted({path for ctl, path in by_controller.items() if path != by_controller[walk] and ctl != "unified"})
    )
    return CgroupLayout(
        version=1,
        walk_root=by_controller[walk],
        walk_controller=walk,
        cpu=by_controller.get("cpuacct"),
        memory=by_controller.get("memory"),
        blkio=by_controller.get("blkio"),
        devices=by_controller.get("devices"),
        slurm_roots=slurm_roots,
    )


def _pod_of(parents: list[str]) -> tuple[str | None, str | None]:
    """Pod UID and QoS class from the directories above a container, ``(None, None)`` outside Kubernetes."""
    uid = None
    qos = None
    for part in parents:
        match = _POD_CGROUPFS.match(part) or _POD_SYSTEMD.match(part)
        if match:
            uid = match.group(1).replace("_", "-")
        elif part in ("besteffort", "kubepods-besteffort.slice"):
            qos = "BestEffort"
        elif part in ("burstable", "kubepods-burstable.slice"):
            qos = "Burstable"
    if uid is None:
        return None, None
    return uid, qos or "Guaranteed"


def classify(parents: list[str], name: str, services: frozenset[str]) -> Unit | None:
    """The unit a cgroup directory is, or ``None`` when it is none (then its children are looked at)."""
    path = "/" + "/".join([*parents, name])
    match = _SCOPE.match(name)
    if match:
        uid, qos = _pod_of(parents)
        return Unit("container", match.group(2), path, _SCOPE_RUNTIME[match.group(1)], uid, qos)
    match = _LIBPOD.match(name)
    if match:
        return Unit("container", match.group(1), path, "podman")
    if _HEX_ID.match(name):
        uid, qos = _pod_of(parents)
        if uid is not None:
            return Unit("container", name, path, "cri", uid, qos)
        return Unit("container", name, path, "docker" if parents[-1:] == ["docker"] else "cri")
    match = _SLURM_JOB.match(name)
    if match and any(p.startswith("slurm") for p in parents):
        uid_match = _SLURM_UID.match(parents[-1]) if parents else None
        return Unit("slurm", match.group(1), path, "slurm", slurm_uid=int(uid_match.group(1)) if uid_match else None)
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


def walk_units(root: str, services: frozenset[str], start: str = "") -> list[Unit]:
    """Every unit below ``root`` (optionally below ``root + start``); directories that vanish are skipped."""
    found: list[Unit] = []
    start_parts = [p for p in start.split("/") if p]
    stack: list[tuple[str, list[str]]] = [(os.path.join(root, *start_parts), start_parts)]  # noqa: PTH118
    while stack:
        directory, parents = stack.pop()
        try:
            entries = [e.name for e in os.scandir(directory) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for name in entries:
            unit = classify(parents, name, services)
            if unit is not None:
                found.append(unit)
            elif len(parents) < MAX_DEPTH:
                stack.append((directory + "/" + name, [*parents, name]))
    return found


def discover(layout: CgroupLayout, services: frozenset[str]) -> list[Unit]:
    """All units of the host, each once."""
    units = walk_units(layout.walk_root, services)
    if layout.version == 1 and not any(u.kind == "slurm" for u in units):
        for root in layout.slurm_roots:
            try:
                tops = [e.name for e in os.scandir(root) if e.is_dir() and e.name.startswith("slurm")]
            except OSError:
                continue
            for top in tops:
                units.extend(walk_units(root, frozenset(), "/" + top))
            if any(u.kind == "slurm" for u in units):
                break
    units.sort(key=lambda u: u.path)
    return units


def cgroup_pids(root: str, path: str, limit: int = 3) -> list[int]:
    """Up to ``limit`` process ids in the cgroup at ``path`` or, if it holds none itself, in its descendants."""
    stack = [root + path]
    pids: list[int] = []
    while stack and len(pids) < limit:
        directory = stack.pop()
        data = read_bytes(directory + "/cgroup.procs")
        if data:
            pids.extend(int(p) for p in data.split()[: limit - len(pids)] if p.isdigit())
            continue
        try:
            stack.extend(e.path for e in os.scandir(directory) if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return pids


def pid_cgroup_path(proc_root: str, pid: int, controller: str) -> str | None:
    """The cgroup path of a process in the hierarchy ``controller`` (``""`` = v2), or ``None`` if it is gone."""
    data = read_bytes(f"{proc_root}/{pid}/cgroup")
    if data is None:
        return None
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        if controller == "" and fields[0] == "0" and fields[1] == "":
            return fields[2]
        if controller and controller in fields[1].split(","):
            return fields[2]
    return None
