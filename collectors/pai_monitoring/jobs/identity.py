"""Who a container or job belongs to: the original job-exporter's keys, read from labels and environment.

The keys and their precedence follow the original: container labels first, environment variables over them;
kube-launcher's ``FC_TASK_INDEX`` stands for ``PAI_TASK_INDEX``; ``FC_FRAMEWORK_ATTEMPT_INSTANCE_UID`` or YARN's
``APP_ID`` is the job instance; DLWS jobs use ``DLWS_JOB_ID``, ``DLWS_USER_NAME`` and ``DLWS_VC_NAME``.
"""

from __future__ import annotations

import pwd
from collections.abc import Mapping
from dataclasses import dataclass

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
WANTED_KEYS: frozenset[str] = frozenset(k for keys in _SOURCES.values() for k in keys) | frozenset(GPU_KEYS)
JOB_KEYS = frozenset(_SOURCES["job_name"])

# Kubernetes metadata: label/annotation keys set by containerd's CRI plugin, CRI-O and dockershim, first found wins.
_KUBE_SOURCES: dict[str, tuple[str, ...]] = {
    "pod_name": ("io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"),
    "namespace": ("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"),
    "container": ("io.kubernetes.cri.container-name", "io.kubernetes.container.name"),
}
_SANDBOX_MARKERS = (("io.kubernetes.cri.container-type", "sandbox"), ("io.kubernetes.docker.type", "podsandbox"))


@dataclass(frozen=True)
class JobIdentity:
    username: str = UNKNOWN
    job_name: str = UNKNOWN
    role_name: str = UNKNOWN
    task_index: str = UNKNOWN
    job_instance_id: str = UNKNOWN
    virtual_cluster: str = UNKNOWN

    def labels(self) -> tuple[str, str, str, str, str, str]:
        return (
            self.username,
            self.job_name,
            self.role_name,
            self.task_index,
            self.job_instance_id,
            self.virtual_cluster,
        )


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


def user_name(uid: int) -> str:
    """The login name of ``uid``, or the number itself when the host does not know it."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
