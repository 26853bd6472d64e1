"""Who a container or Slurm job belongs to: the original job-exporter's keys, from the best source at hand.

The keys and their precedence follow the original: container labels first, environment variables over them;
kube-launcher's ``FC_TASK_INDEX`` stands for ``PAI_TASK_INDEX``; ``FC_FRAMEWORK_ATTEMPT_INSTANCE_UID`` or YARN's
``APP_ID`` is the job instance; DLWS jobs use ``DLWS_JOB_ID``, ``DLWS_USER_NAME`` and ``DLWS_VC_NAME``.

Sources, in order (:func:`resolve`): the Docker API's labels and environment (when it answered this cycle), the OCI
bundle in containerd's or containers/storage's state (podman, CRI-O), then ``/proc/<pid>/environ`` of the unit's
first processes. The result is kept for the unit's lifetime; a unit that showed no job keys is looked at again only
when its first process changes. A Slurm job is named by Slurm itself (:func:`slurm_identity`).
"""

from __future__ import annotations

import pwd
from collections.abc import Mapping
from dataclasses import dataclass, field

from pai_monitoring.jobs.docker_api import inspect_metadata
from pai_monitoring.jobs.kernel import LockedReads, NotNow, read_file, read_stat, read_status
from pai_monitoring.jobs.layouts import SLURM_EXTERN_STEP, SLURM_STEPD_DIR, Unit
from pai_monitoring.jobs.runtimes import RuntimeSources, RuntimeView

UNKNOWN = "unknown"
TASK_LABELS = ("username", "job_name", "role_name", "task_index", "job_instance_id", "virtual_cluster")

# label -> keys that give it, first found wins
_SOURCES: dict[str, tuple[str, ...]] = {
    "username": ("PAI_USER_NAME", "DLWS_USER_NAME"),
    "job_name": ("PAI_JOB_NAME", "DLWS_JOB_ID"),
    "role_name": ("PAI_CURRENT_TASK_ROLE_NAME",),
    "task_index": ("PAI_TASK_INDEX", "FC_TASK_INDEX"),
    "job_instance_id": ("FC_FRAMEWORK_ATTEMPT_INSTANCE_UID", "APP_ID"),
    "virtual_cluster": ("PAI_VIRTUAL_CLUSTER", "DLWS_VC_NAME"),
}
GPU_KEYS = ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "GPU_ID")
SLURM_KEYS = ("SLURM_JOB_ID", "SLURM_JOB_USER", "SLURM_JOB_ACCOUNT", "SLURM_JOB_PARTITION")
WANTED_KEYS: frozenset[str] = (
    frozenset(k for keys in _SOURCES.values() for k in keys) | frozenset(GPU_KEYS) | frozenset(SLURM_KEYS)
)
JOB_KEYS = frozenset(_SOURCES["job_name"])

# Kubernetes metadata: label/annotation keys set by containerd's CRI plugin, CRI-O (the kubelet's labels, copied
# into its annotations) and dockershim/cri-dockerd, first found wins.
_KUBE_SOURCES: dict[str, tuple[str, ...]] = {
    "pod_name": ("io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"),
    "namespace": ("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"),
    "container": ("io.kubernetes.cri.container-name", "io.kubernetes.container.name"),
}
_SANDBOX_MARKERS = (
    ("io.kubernetes.cri.container-type", "sandbox"),
    ("io.kubernetes.cri-o.ContainerType", "sandbox"),
    ("io.kubernetes.docker.type", "podsandbox"),
)
PAUSE_COMMAND = "pause"
PASSWD_CAP = 4 * 1024 * 1024
SLURM_SKIP_DIRS = frozenset({SLURM_STEPD_DIR})
"""Step directories holding slurmstepd (root's environment, not the job's): never a source of identity."""
SLURM_LAST_DIRS = frozenset({SLURM_EXTERN_STEP})
"""The extern step holds a placeholder process; the job's own steps tell more."""


@dataclass(frozen=True)
class JobIdentity:
    username: str = UNKNOWN
    job_name: str = UNKNOWN
    role_name: str = UNKNOWN
    task_index: str = UNKNOWN
    job_instance_id: str = UNKNOWN
    virtual_cluster: str = UNKNOWN

    _labels: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = (self.username, self.job_name, self.role_name, self.task_index, self.job_instance_id)
        object.__setattr__(self, "_labels", (*values, self.virtual_cluster))

    def labels(self) -> tuple[str, ...]:
        """The values of :data:`TASK_LABELS`, in order."""
        return self._labels


@dataclass(frozen=True)
class KubeMeta:
    pod_name: str = UNKNOWN
    namespace: str = UNKNOWN
    container: str = UNKNOWN
    sandbox: bool = False


def merged(labels: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """Labels overridden by environment variables, as the original merged ``docker inspect`` output."""
    values = {k: v for k, v in labels.items() if k in WANTED_KEYS}
    values.update((k, v) for k, v in env.items() if k in WANTED_KEYS)
    return values


def has_job_keys(values: Mapping[str, str]) -> bool:
    return any(values.get(key) for key in JOB_KEYS)


def job_identity(values: Mapping[str, str], defaults: Mapping[str, str] | None = None) -> JobIdentity:
    """The identity from merged labels and environment; missing values are ``unknown`` (or ``defaults[label]``)."""
    fields: dict[str, str] = {}
    for label, keys in _SOURCES.items():
        value = next((values[k] for k in keys if values.get(k)), None)
        if value is None and defaults:
            value = defaults.get(label)
        fields[label] = value or UNKNOWN
    return JobIdentity(**fields)


def kube_meta(metadata: Mapping[str, str]) -> KubeMeta | None:
    """Pod, namespace and container from runtime annotations or labels; ``None`` outside Kubernetes."""
    fields = {
        name: next((metadata[k] for k in keys if metadata.get(k)), UNKNOWN) for name, keys in _KUBE_SOURCES.items()
    }
    sandbox = any(metadata.get(key) == value for key, value in _SANDBOX_MARKERS)
    if all(v == UNKNOWN for v in fields.values()) and not sandbox:
        return None
    return KubeMeta(**fields, sandbox=sandbox)


def user_name(uid: int, rootfs: str = "/") -> str:
    """The login name of ``uid``, or the number itself when the host does not know it.

    On the host's own root the system's user database answers (directory services included); with another root
    (``--path.rootfs`` of an exporter in a container) that root's ``/etc/passwd``."""
    if rootfs.rstrip("/") == "":
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)
    data = read_file(f"{rootfs.rstrip('/')}/etc/passwd", PASSWD_CAP) or b""
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2] == str(uid):
            return fields[0]
    return str(uid)


@dataclass
class Resolved:
    """What is known about one unit."""

    values: dict[str, str] = field(default_factory=dict)
    """Identity, GPU and Slurm keys (merged labels and environment)."""
    kube: KubeMeta | None = None
    name: str | None = None
    checked_pid: int | None = None
    runtimes_done: bool = False
    """Whether the runtimes were asked; not yet when this cycle's Docker API time budget ran out first."""

    @property
    def final(self) -> bool:
        return has_job_keys(self.values)


def _from_runtimes(unit: Unit, view: RuntimeView, sources: RuntimeSources, resolved: Resolved) -> bool:
    """Fill ``resolved`` from the runtimes; ``False`` when the Docker API should have been asked but was not."""
    done = True
    labels: dict[str, str] = {}
    env: dict[str, str] = {}
    metadata: dict[str, str] = {}
    runtime = view.runtime_of(unit)
    # any container the Docker API knows (docker itself, or podman's Docker-compatible service) is inspected
    if sources.docker is not None and view.docker_states is not None and unit.ident in view.docker_states:
        inspected = sources.docker.inspect(unit.ident) if sources.may_inspect() else None
        done = inspected is not None
        if inspected is not None:
            labels, env, resolved.name = inspect_metadata(inspected)
            metadata.update(labels)
    namespace = (view.containerd_tasks or {}).get(unit.ident)
    if namespace is not None and sources.containerd is not None and not env:
        bundle = sources.containerd.bundle(namespace, unit.ident)
        if bundle is not None:
            env, metadata = bundle.env, {**bundle.annotations, **metadata}
    if runtime in ("podman", "crio") and sources.storage is not None:
        if runtime == "podman":
            resolved.name = (view.storage_names or {}).get(unit.ident, resolved.name)
        if not env:
            bundle = sources.storage.bundle(unit.ident)
            if bundle is not None:
                env, metadata = bundle.env, {**bundle.annotations, **metadata}
    resolved.values = merged(labels, env)
    resolved.kube = kube_meta(metadata)
    if resolved.kube is not None and resolved.kube.container != UNKNOWN:
        resolved.name = resolved.kube.container
    return done


def resolve(
    unit: Unit,
    pids: list[int],
    view: RuntimeView,
    sources: RuntimeSources,
    proc_root: str,
    reads: LockedReads,
    previous: Resolved | None,
) -> Resolved:
    """The unit's metadata, reusing ``previous`` when nothing new can be learnt."""
    first = pids[0] if pids else None
    runtimes_pending = unit.kind == "container" and (previous is None or not previous.runtimes_done)
    if previous is not None and not runtimes_pending and (previous.final or previous.checked_pid == first):
        return previous
    resolved = previous or Resolved()
    if runtimes_pending:
        from_proc = resolved.values
        resolved.runtimes_done = _from_runtimes(unit, view, sources, resolved)
        if from_proc:
            resolved.values = {**from_proc, **resolved.values}
    checked = True
    if not resolved.final:
        for pid in pids:
            try:
                env = reads.environ(proc_root, pid, WANTED_KEYS)
            except NotNow:
                checked = False  # in D state, or a read is stuck: ask again next cycle
                continue
            if env:
                resolved.values = {**env, **resolved.values} if resolved.values else env
                if resolved.final:
                    break
    if unit.pod_uid is not None and resolved.kube is None and first is not None:
        stat = read_stat(proc_root, first)
        if stat is not None and stat.comm == PAUSE_COMMAND:
            resolved.kube = KubeMeta(sandbox=True)
    if unit.kind == "service":
        resolved.name = unit.ident
    if checked:
        resolved.checked_pid = first
    return resolved


@dataclass(frozen=True)
class SlurmJob:
    """What Slurm says about a job, from its cgroup path and its processes' environment."""

    job_id: str
    """The numeric job id; the SLUID where the directory is named by it and no process tells the id."""
    account: str = UNKNOWN
    partition: str = UNKNOWN


def slurm_identity(
    unit: Unit, resolved: Resolved, pids: list[int], proc_root: str, rootfs: str = "/"
) -> tuple[JobIdentity, SlurmJob]:
    """A Slurm job's identity: ``PAI_*`` keys if its environment has them, else the job id and its owner.

    The owner is ``SLURM_JOB_USER``, else the uid in the cgroup path (v1), else the owner of the job's first task
    process (v2; slurmstepd, which runs as root, is never asked)."""
    values = resolved.values
    job = SlurmJob(
        job_id=values.get("SLURM_JOB_ID") or unit.ident,
        account=values.get("SLURM_JOB_ACCOUNT") or UNKNOWN,
        partition=values.get("SLURM_JOB_PARTITION") or UNKNOWN,
    )
    defaults = {"job_name": job.job_id}
    user = values.get("SLURM_JOB_USER")
    uid = unit.slurm_uid
    if user is None and uid is None and pids:
        status = read_status(proc_root, pids[0])
        uid = status.uid if status is not None else None
    if user is not None:
        defaults["username"] = user
    elif uid is not None:
        defaults["username"] = user_name(uid, rootfs)
    return job_identity(values, defaults), job
