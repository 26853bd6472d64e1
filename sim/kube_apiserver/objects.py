"""Build Kubernetes objects from short descriptions, with the official client's own models.

A scenario file describes a node as ``{name: node1, ip: 10.0.0.1, gpus: 4, ready: true}``; this module turns
that into a real ``V1Node`` and serialises it the way the client does, so that the JSON the stand-in serves has
the shape the API server gives. Tests may build models by hand instead and pass them to :func:`to_json`.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client

_SERIALISER = client.ApiClient()

NODE_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
POD_CONDITIONS = ("Initialized", "PodScheduled", "ContainersReady", "Ready")
CREATED = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def to_json(obj: Any) -> dict[str, Any]:
    """The JSON form of a client model (``V1Pod``, ``V1Node``, ...), as the client itself serialises it."""
    data = _SERIALISER.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    if not isinstance(data, dict):
        raise TypeError(f"expected an object, got {type(obj).__name__}")
    return data


def _status(value: object) -> str:
    """``true``/``false``/other (YAML booleans or strings) to a condition status ``True``/``False``/``Unknown``."""
    if isinstance(value, bool):
        return "True" if value else "False"
    text = str(value).strip().lower()
    return {"true": "True", "false": "False"}.get(text, "Unknown")


def build_node(spec: Mapping[str, Any]) -> client.V1Node:
    """A node from ``name``, ``ip``, ``gpus``, ``gpu_resource``, ``ready``, ``unschedulable`` and ``conditions``.

    ``conditions`` maps condition types to statuses and overrides the healthy defaults (Ready True, the pressures
    False); a status of ``absent`` drops that condition; ``conditions: none`` drops them all.
    """
    name = str(spec["name"])
    resource = str(spec.get("gpu_resource", "nvidia.com/gpu"))
    gpus = int(spec.get("gpus", 0))
    statuses: dict[str, str] = {kind: "False" for kind in NODE_CONDITIONS}
    statuses["Ready"] = _status(spec.get("ready", True))
    overrides = spec.get("conditions") or {}
    if overrides == "none":
        statuses = {}
    elif isinstance(overrides, Mapping):
        for kind, value in overrides.items():
            if str(value) == "absent":
                statuses.pop(str(kind), None)
            else:
                statuses[str(kind)] = _status(value)
    allocatable = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    if gpus:
        allocatable[resource] = str(gpus)
    addresses = [client.V1NodeAddress(type="Hostname", address=name)]
    if spec.get("ip"):
        addresses.insert(0, client.V1NodeAddress(type="InternalIP", address=str(spec["ip"])))
    return client.V1Node(
        api_version="v1",
        kind="Node",
        metadata=client.V1ObjectMeta(
            name=name,
            uid=f"uid-node-{name}",
            resource_version="1",
            creation_timestamp=CREATED,
            labels={"kubernetes.io/hostname": name, **{str(k): str(v) for k, v in (spec.get("labels") or {}).items()}},
        ),
        spec=client.V1NodeSpec(unschedulable=bool(spec.get("unschedulable", False)) or None),
        status=client.V1NodeStatus(
            addresses=addresses,
            allocatable=allocatable,
            capacity=dict(allocatable),
            conditions=[
                client.V1NodeCondition(type=kind, status=status, reason=f"Kubelet{kind}", message=f"{kind} {status}")
                for kind, status in statuses.items()
            ],
        ),
    )


def _container_state(spec: Mapping[str, Any]) -> client.V1ContainerState:
    state = str(spec.get("state", "running"))
    if state == "waiting":
        return client.V1ContainerState(
            waiting=client.V1ContainerStateWaiting(reason=str(spec.get("reason", "ContainerCreating")))
        )
    if state == "terminated":
        return client.V1ContainerState(
            terminated=client.V1ContainerStateTerminated(
                exit_code=int(spec.get("exit_code", 0)),
                reason=str(spec.get("reason", "Completed")),
                started_at=CREATED,
                finished_at=spec.get("finished_at", CREATED),
            )
        )
    if state == "none":
        return client.V1ContainerState()
    return client.V1ContainerState(running=client.V1ContainerStateRunning(started_at=CREATED))


def _resources(spec: Mapping[str, Any], resource: str) -> client.V1ResourceRequirements:
    limits: dict[str, str] = {"cpu": "1", "memory": "1Gi"}
    requests: dict[str, str] = {"cpu": "500m", "memory": "512Mi"}
    if spec.get("gpus"):
        limits[resource] = str(spec["gpus"])
    if spec.get("gpu_requests"):
        requests[resource] = str(spec["gpu_requests"])
    return client.V1ResourceRequirements(limits=limits, requests=requests)


def build_pod(spec: Mapping[str, Any]) -> client.V1Pod:
    """A pod from a short description.

    Keys: ``name``, ``namespace`` (default ``default``), ``labels``, ``node`` (absent: not scheduled), ``host_ip``,
    ``phase`` (default Running, or Pending when not scheduled), ``ready``, ``conditions`` (overrides, or ``none``),
    ``reason``/``message`` (pod status), ``containers`` and ``init_containers`` (each ``name``, ``state``
    running/waiting/terminated/none, ``reason``, ``exit_code``, ``ready``, ``restarts``, ``last_reason`` and
    ``last_exit_code`` (the last termination, e.g. ``OOMKilled``/137) with ``last_finished_at`` (a
    ``datetime``, default the creation time), ``gpus`` (limit),
    ``gpu_requests``, ``restart_policy``), ``gpu_resource``.
    """
    name = str(spec["name"])
    node = spec.get("node")
    resource = str(spec.get("gpu_resource", "nvidia.com/gpu"))
    phase = str(spec.get("phase", "Running" if node else "Pending"))
    ready = _status(spec.get("ready", phase == "Running"))
    containers = list(spec.get("containers") or [{"name": "main"}])
    init_containers = list(spec.get("init_containers") or [])
    conditions: dict[str, str] = {
        "Initialized": "True",
        "PodScheduled": "True" if node else "False",
        "ContainersReady": ready,
        "Ready": ready,
    }
    overrides = spec.get("conditions") or {}
    if overrides == "none":
        conditions = {}
    elif isinstance(overrides, Mapping):
        for kind, value in overrides.items():
            if str(value) == "absent":
                conditions.pop(str(kind), None)
            else:
                conditions[str(kind)] = _status(value)

    def container(c: Mapping[str, Any]) -> client.V1Container:
        return client.V1Container(
            name=str(c["name"]),
            image=str(c.get("image", "registry.local/job:1.0")),
            resources=_resources(c, resource),
            restart_policy=c.get("restart_policy"),
        )

    def status_of(c: Mapping[str, Any]) -> client.V1ContainerStatus:
        running = str(c.get("state", "running")) == "running"
        return client.V1ContainerStatus(
            name=str(c["name"]),
            image=str(c.get("image", "registry.local/job:1.0")),
            image_id="sha256:0",
            ready=bool(c.get("ready", running and ready == "True")),
            restart_count=int(c.get("restarts", 0)),
            state=_container_state(c),
            last_state=_container_state(
                {
                    "state": "terminated",
                    "reason": c["last_reason"],
                    "exit_code": c.get("last_exit_code", 1),
                    "finished_at": c.get("last_finished_at", CREATED),
                }
            )
            if c.get("last_reason")
            else None,
        )

    scheduled = node is not None
    return client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=str(spec.get("namespace", "default")),
            uid=f"uid-pod-{name}",
            resource_version="1",
            creation_timestamp=CREATED,
            labels={str(k): str(v) for k, v in (spec.get("labels") or {}).items()} or None,
        ),
        spec=client.V1PodSpec(
            node_name=str(node) if scheduled else None,
            containers=[container(c) for c in containers],
            init_containers=[container(c) for c in init_containers] or None,
            overhead=dict(spec["overhead"]) if spec.get("overhead") else None,
        ),
        status=client.V1PodStatus(
            phase=phase,
            host_ip=str(spec.get("host_ip", "")) or None,
            reason=spec.get("reason"),
            message=spec.get("message"),
            conditions=[
                client.V1PodCondition(type=kind, status=status, last_transition_time=CREATED)
                for kind, status in conditions.items()
            ]
            or None,
            container_statuses=[status_of(c) for c in containers if c.get("state") != "absent"] if scheduled else None,
            init_container_statuses=[status_of(c) for c in init_containers] if scheduled and init_containers else None,
        ),
    )


def status_object(code: int, reason: str, message: str) -> dict[str, Any]:
    """A ``Status`` object, the body the API server sends with every error."""
    return to_json(
        client.V1Status(
            api_version="v1",
            kind="Status",
            metadata=client.V1ListMeta(),
            status="Failure",
            message=message,
            reason=reason,
            code=code,
        )
    )


def dumps(data: Any) -> str:
    """Compact JSON, as the API server writes it."""
    return json.dumps(data, separators=(",", ":"))
