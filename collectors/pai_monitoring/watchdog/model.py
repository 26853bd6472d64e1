"""Pods and nodes reduced to the few fields the watchdog reports, read straight from the API's JSON.

Each object of a list page becomes a small slotted record here and the page's JSON is dropped, so memory follows
the page size, not the cluster size. Readers never raise on odd objects: a malformed one is counted as a ``parse``
problem and skipped, unknown conditions and container states are counted as the original watchdog did.
"""

from __future__ import annotations

import datetime
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils import parse_quantity

KNOWN_POD_CONDITIONS = frozenset(
    {
        "Initialized",
        "PodScheduled",
        "Ready",
        "ContainersReady",
        "PodReadyToStartContainers",
        "PodHasNetwork",
        "DisruptionTarget",
    }
)
NODE_CONDITIONS = {
    "Ready": "ready",
    "MemoryPressure": "memory_pressure",
    "DiskPressure": "disk_pressure",
    "PIDPressure": "pid_pressure",
    "NetworkUnavailable": "network_unavailable",
}
TERMINAL_PHASES = frozenset({"succeeded", "failed"})
UNSCHEDULED = "unscheduled"
UNKNOWN = "unknown"


@dataclass
class Problems:
    """Counts of what could not be read in one collection, by ``process_error_log_total`` type."""

    parse: int = 0
    unknown_pod_cond: int = 0
    unknown_node_cond: int = 0
    unexpected_container_state: int = 0
    examples: dict[str, str] = field(default_factory=dict)
    """The first example of each problem type, for the log."""

    def note(self, kind: str, example: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.examples.setdefault(kind, example)


@dataclass(frozen=True, slots=True)
class ContainerView:
    name: str
    state: str
    """``running``, ``waiting``, ``terminated`` or ``unknown``."""
    ready: bool
    reason: str
    exit_code: int | None
    restarts: int
    last_reason: str
    """Reason of the container's last termination (``OOMKilled``, ``Error``), empty when it never ended."""
    last_exit_code: int | None
    last_finished: float | None
    """Unix time its last termination ended (``lastState.terminated.finishedAt``); ``None`` when it has none, or
    when the kubelet could not tell (e.g. ``ContainerStatusUnknown`` carries no time)."""


@dataclass(frozen=True, slots=True)
class PodView:
    name: str
    namespace: str
    service_name: str | None
    """Value of the service label (``app``) when the pod is a service pod."""
    job_name: str | None
    """Value of the job label (``jobName``) when the pod is a job pod (and not a service pod)."""
    username: str
    """Value of the user label (``userName``) of a job pod, empty when absent."""
    phase: str
    host_ip: str
    node_name: str
    initialized: str
    pod_scheduled: str
    ready: str
    containers: tuple[ContainerView, ...]
    gpus: float
    reason: str
    message: str

    @property
    def bound(self) -> bool:
        return bool(self.node_name)

    @property
    def holds_resources(self) -> bool:
        """Scheduled and not finished: the kubelet counts its requests against the node."""
        return self.bound and self.phase not in TERMINAL_PHASES


def container_is_unhealthy(pod: PodView, container: ContainerView) -> bool:
    """Waiting, in an unknown state, terminated with an error, or running but not ready while the pod runs.

    The one test of a container's health: the journal logs these containers, and for a job pod only these have a
    ``pai_job_container_status`` series (a healthy cluster costs no series per container).
    """
    if container.state in ("waiting", "unknown"):
        return pod.phase != "succeeded"
    if container.state == "terminated":
        return container.exit_code not in (0, None)
    return pod.phase == "running" and not container.ready


@dataclass(frozen=True, slots=True)
class NodeView:
    name: str
    host_ip: str
    ready: str
    memory_pressure: str
    disk_pressure: str
    pid_pressure: str
    network_unavailable: str
    unschedulable: bool
    gpus: float


_LOWERED: dict[object, str] = {}


def _status(value: object) -> str:
    """A condition status or phase lower-cased (``true``, ``running``...), as the original labels have it.

    The few distinct values are shared, not one new string per pod: 150,000 pods times five labels add up.
    """
    if not value:
        return UNKNOWN
    lowered = _LOWERED.get(value)
    if lowered is None:
        lowered = sys.intern(str(value).lower())
        if len(_LOWERED) < 1000:  # a bound, in case a server sends free text here
            _LOWERED[value] = lowered
    return lowered


def _quantity(value: object) -> float:
    """A resource quantity (``"2"``, ``"1k"``, ``500m``) as a number; 0 when absent or unreadable."""
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    text = str(value)
    if text.isdigit():
        return float(text)
    try:
        number = float(parse_quantity(text))  # type: ignore[no-untyped-call]
    except (ValueError, ArithmeticError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _container_gpus(container: Mapping[str, Any], resources: Sequence[str]) -> dict[str, float]:
    """Per GPU resource, the larger of the container's limit and request (extended resources: request = limit)."""
    spec = container.get("resources") or {}
    limits = spec.get("limits") or {}
    requests = spec.get("requests") or {}
    return {
        r: max(_quantity(limits.get(r)), _quantity(requests.get(r))) for r in resources if r in limits or r in requests
    }


def effective_gpus(spec: Mapping[str, Any], resources: Sequence[str]) -> float:
    """GPUs the scheduler reserves for a pod, summed over ``resources``.

    Kubernetes' effective request: the larger of (all app containers + all restartable init containers, i.e.
    sidecars) and the peak of the init phase (each ordinary init container plus the sidecars started before it),
    plus the pod overhead. The original Go watchdog kept only the last container's GPUs.
    """
    containers = [_container_gpus(c, resources) for c in spec.get("containers") or ()]
    init_containers = [
        (_container_gpus(c, resources), c.get("restartPolicy") == "Always") for c in spec.get("initContainers") or ()
    ]
    overhead = spec.get("overhead") or {}
    if not any(containers) and not any(gpus for gpus, _ in init_containers) and not overhead:
        return 0.0
    total = 0.0
    for resource in resources:
        app = sum(gpus.get(resource, 0.0) for gpus in containers)
        sidecars = 0.0
        init_peak = 0.0
        for gpus, restartable in init_containers:
            value = gpus.get(resource, 0.0)
            if restartable:
                sidecars += value
                init_peak = max(init_peak, sidecars)
            else:
                init_peak = max(init_peak, value + sidecars)
        total += max(app + sidecars, init_peak) + _quantity(overhead.get(resource))
    return total


def _timestamp(value: object) -> float | None:
    """An RFC 3339 time of the API (``2026-01-01T00:00:00Z``) as Unix time; ``None`` when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:  # the API always sends UTC; be lenient with a server that leaves out the zone
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _container(status: Mapping[str, Any], problems: Problems, pod: str) -> ContainerView:
    state_obj = status.get("state") or {}
    state = UNKNOWN
    detail: Mapping[str, Any] = {}
    for candidate in ("running", "waiting", "terminated"):
        if state_obj.get(candidate) is not None:
            state, detail = candidate, state_obj[candidate]
            break
    if state == UNKNOWN:
        problems.note("unexpected_container_state", f"{pod} container={status.get('name')}")
    exit_code = detail.get("exitCode")
    last = (status.get("lastState") or {}).get("terminated") or {}
    last_exit_code = last.get("exitCode")
    return ContainerView(
        name=str(status.get("name", "")),
        state=state,
        ready=bool(status.get("ready")),
        reason=sys.intern(str(detail.get("reason") or "")),
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        restarts=int(status.get("restartCount") or 0),
        last_reason=sys.intern(str(last.get("reason") or "")),
        last_exit_code=int(last_exit_code) if isinstance(last_exit_code, int) else None,
        last_finished=_timestamp(last.get("finishedAt")),
    )


def read_pod(
    raw: Any, resources: Sequence[str], service_label: str, job_label: str, problems: Problems, user_label: str = ""
) -> PodView | None:
    """A pod of a list page, or ``None`` (counted as ``parse``) when it is not a readable pod."""
    try:
        metadata = raw["metadata"]
        name = str(metadata["name"])
        namespace = sys.intern(str(metadata.get("namespace") or ""))
        labels = metadata.get("labels") or {}
        spec = raw.get("spec") or {}
        status = raw.get("status") or {}
        conditions = {"Initialized": UNKNOWN, "PodScheduled": UNKNOWN, "Ready": UNKNOWN}
        for condition in status.get("conditions") or []:
            kind = condition.get("type")
            if kind in conditions:
                conditions[kind] = _status(condition.get("status"))
            elif kind not in KNOWN_POD_CONDITIONS:
                problems.note("unknown_pod_cond", f"namespace={namespace} pod={name} condition={kind}")
        service = labels.get(service_label) if service_label in labels else None
        job = labels.get(job_label) if service is None and job_label in labels else None
        user = labels.get(user_label) if job is not None and user_label else None
        containers = tuple(
            _container(c, problems, f"namespace={namespace} pod={name}") for c in status.get("containerStatuses") or ()
        )
        gpus = effective_gpus(spec, resources)
        return PodView(
            name=name,
            namespace=namespace,
            service_name=None if service is None else str(service),
            job_name=None if job is None else str(job),
            username="" if user is None else sys.intern(str(user)),
            phase=_status(status.get("phase")),
            host_ip=sys.intern(str(status.get("hostIP") or UNSCHEDULED)),
            node_name=sys.intern(str(spec.get("nodeName") or "")),
            initialized=conditions["Initialized"],
            pod_scheduled=conditions["PodScheduled"],
            ready=conditions["Ready"],
            containers=containers,
            gpus=gpus,
            reason=str(status.get("reason") or ""),
            message=str(status.get("message") or ""),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        problems.note("parse", f"pod: {type(exc).__name__}: {exc}")
        return None


def read_node(raw: Any, resources: Sequence[str], problems: Problems) -> NodeView | None:
    """A node of a list page, or ``None`` (counted as ``parse``) when it is not a readable node."""
    try:
        metadata = raw["metadata"]
        name = str(metadata["name"])
        spec = raw.get("spec") or {}
        status = raw.get("status") or {}
        host_ip = name
        for address in status.get("addresses") or []:
            if address.get("type") == "InternalIP" and address.get("address"):
                host_ip = str(address["address"])
                break
        values = dict.fromkeys(NODE_CONDITIONS.values(), UNKNOWN)
        for condition in status.get("conditions") or []:
            kind = condition.get("type")
            if kind in NODE_CONDITIONS:
                values[NODE_CONDITIONS[kind]] = _status(condition.get("status"))
            else:
                problems.note("unknown_node_cond", f"node={name} condition={kind}")
        allocatable = status.get("allocatable") or {}
        capacity = status.get("capacity") or {}
        gpus = sum(_quantity(allocatable.get(r, capacity.get(r))) for r in resources)
        return NodeView(
            name=name,
            host_ip=host_ip,
            unschedulable=bool(spec.get("unschedulable")),
            gpus=gpus,
            **values,
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        problems.note("parse", f"node: {type(exc).__name__}: {exc}")
        return None
