"""What the stand-in serves: the cluster's objects, the fault in force and the credentials it accepts.

Everything here can change while the server runs (from a test, the control endpoint or an edited scenario file);
one lock guards it, and each list page is cut from the state of the moment.
"""

from __future__ import annotations

import collections
import copy
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kube_apiserver.objects import build_node, build_pod, dumps, to_json
from kube_apiserver.synthetic import SyntheticCluster

FAULT_MODES = ("none", "down", "slow", "error", "malformed", "reset")


@dataclass(frozen=True)
class Fault:
    """A fault the stand-in plays.

    ``down``: the API port is closed (connection refused). ``slow``: every answer waits ``seconds`` first.
    ``error``: answers ``code`` with a ``Status`` body. ``malformed``: answers 200 with broken JSON.
    ``reset``: closes the connection without answering. ``paths`` limits the fault to requests whose path starts
    with one of them (for example ``/api/v1/pods``); empty means every API path.
    """

    mode: str = "none"
    code: int = 500
    seconds: float = 0.0
    paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"fault mode {self.mode!r} is not one of {', '.join(FAULT_MODES)}")

    def applies_to(self, path: str) -> bool:
        return self.mode != "none" and (not self.paths or any(path.startswith(p) for p in self.paths))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Fault:
        data = data or {}
        paths = data.get("paths") or ()
        return cls(
            mode=str(data.get("mode", "none")),
            code=int(data.get("code", 500)),
            seconds=float(data.get("seconds", 0.0)),
            paths=(paths,) if isinstance(paths, str) else tuple(str(p) for p in paths),
        )


@dataclass(frozen=True)
class Page:
    items: list[str]
    next_index: int | None
    resource_version: int


@dataclass
class _Objects:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    synthetic: SyntheticCluster | None = None


class ClusterState:
    """The stand-in's cluster and behaviour, safe to change from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects = _Objects()
        self._fault = Fault()
        self._token: str | None = None
        self._readyz = True
        self._resource_version = 1
        self._requests: collections.deque[tuple[str, str]] = collections.deque(maxlen=10_000)
        self.listeners: list[Any] = []
        """Callbacks ``f(state)`` run after the fault changes (the server opens or closes its port on ``down``)."""

    # --- changing the state -------------------------------------------------------------------------------------

    def set_objects(self, nodes: Iterable[Any] = (), pods: Iterable[Any] = ()) -> None:
        """Replace the explicit nodes and pods; each is a client model (``V1Node``, ``V1Pod``) or its JSON dict."""
        node_dicts = [n if isinstance(n, dict) else to_json(n) for n in nodes]
        pod_dicts = [p if isinstance(p, dict) else to_json(p) for p in pods]
        with self._lock:
            self._objects = replace(self._objects, nodes=node_dicts, pods=pod_dicts)
            self._resource_version += 1

    def set_synthetic(self, cluster: SyntheticCluster | None) -> None:
        with self._lock:
            self._objects = replace(self._objects, synthetic=cluster)
            self._resource_version += 1

    def set_fault(self, fault: Fault) -> None:
        with self._lock:
            self._fault = fault
        for listener in list(self.listeners):
            listener(self)

    def set_token(self, token: str | None) -> None:
        """Require ``Authorization: Bearer <token>`` on every request (``None``: accept anyone)."""
        with self._lock:
            self._token = token

    def set_readyz(self, available: bool) -> None:
        """Whether ``/readyz`` exists (API servers before 1.16 answer it with 404)."""
        with self._lock:
            self._readyz = available

    def patch_node(self, name: str, changes: Mapping[str, Any]) -> bool:
        """Change one explicit node: ``ready``, ``unschedulable``, ``conditions`` (type -> status). False if unknown."""
        with self._lock:
            for node in self._objects.nodes:
                if node.get("metadata", {}).get("name") != name:
                    continue
                wanted = dict(changes.get("conditions") or {})
                if "ready" in changes:
                    wanted["Ready"] = changes["ready"]
                conditions = node.setdefault("status", {}).setdefault("conditions", [])
                for kind, value in wanted.items():
                    status = (
                        "True"
                        if value in (True, "True", "true")
                        else "False"
                        if value in (False, "False", "false")
                        else "Unknown"
                    )
                    entry = next((c for c in conditions if c.get("type") == kind), None)
                    if entry is None:
                        conditions.append({"type": kind, "status": status})
                    else:
                        entry["status"] = status
                if "unschedulable" in changes:
                    node.setdefault("spec", {})["unschedulable"] = bool(changes["unschedulable"]) or None
                    if node["spec"]["unschedulable"] is None:
                        del node["spec"]["unschedulable"]
                self._resource_version += 1
                return True
        return False

    def load_scenario(self, doc: Mapping[str, Any]) -> None:
        """Replace everything from a scenario document (see the README for its keys)."""
        nodes = [build_node(n) for n in doc.get("nodes") or []]
        ips = {str(n["name"]): str(n.get("ip", "")) for n in doc.get("nodes") or []}
        pods = []
        for spec in doc.get("pods") or []:
            spec = dict(spec)
            if spec.get("node") and "host_ip" not in spec:
                spec["host_ip"] = ips.get(str(spec["node"]), "")
            pods.append(build_pod(spec))
        raw_nodes = [copy.deepcopy(dict(n)) for n in doc.get("raw_nodes") or []]
        raw_pods = [copy.deepcopy(dict(p)) for p in doc.get("raw_pods") or []]
        synthetic = doc.get("synthetic")
        self.set_objects([*nodes, *raw_nodes], [*pods, *raw_pods])
        self.set_synthetic(
            SyntheticCluster(
                nodes=int(synthetic.get("nodes", 0)),
                pods=int(synthetic.get("pods", 0)),
                gpus_per_node=int(synthetic.get("gpus_per_node", 8)),
            )
            if synthetic
            else None
        )
        self.set_token(str(doc["token"]) if doc.get("token") else None)
        self.set_readyz(bool(doc.get("readyz", True)))
        self.set_fault(Fault.from_mapping(doc.get("fault")))

    # --- reading the state --------------------------------------------------------------------------------------

    @property
    def fault(self) -> Fault:
        with self._lock:
            return self._fault

    @property
    def token(self) -> str | None:
        with self._lock:
            return self._token

    @property
    def readyz(self) -> bool:
        with self._lock:
            return self._readyz

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._resource_version

    def record(self, path: str, query: str) -> None:
        self._requests.append((path, query))

    def requests(self) -> list[tuple[str, str]]:
        """The most recent requests as ``(path, query string)``, oldest first."""
        return list(self._requests)

    def clear_requests(self) -> None:
        self._requests.clear()

    def describe(self) -> dict[str, Any]:
        """The state as a scenario-like document (explicit objects as full JSON), for ``GET /scenario``."""
        with self._lock:
            synthetic = self._objects.synthetic
            return {
                "fault": {
                    "mode": self._fault.mode,
                    "code": self._fault.code,
                    "seconds": self._fault.seconds,
                    "paths": list(self._fault.paths),
                },
                "readyz": self._readyz,
                "token_required": self._token is not None,
                "raw_nodes": copy.deepcopy(self._objects.nodes),
                "raw_pods": copy.deepcopy(self._objects.pods),
                "synthetic": {"nodes": synthetic.nodes, "pods": synthetic.pods} if synthetic else None,
                "resource_version": self._resource_version,
            }

    def page(self, kind: str, namespace: str | None, start: int, limit: int | None, name: str | None = None) -> Page:
        """Up to ``limit`` items of ``kind`` (``pods`` or ``nodes``) from index ``start``, optionally in one namespace.

        ``next_index`` is where the next page starts, or ``None`` at the end.
        """
        with self._lock:
            objects = self._objects
            version = self._resource_version
            explicit = objects.nodes if kind == "nodes" else objects.pods
            explicit_json = [dumps(o) for o in explicit]  # small lists: serialised under the lock, as a snapshot
            explicit_ns = [str(o.get("metadata", {}).get("namespace", "")) for o in explicit]
            explicit_names = [str(o.get("metadata", {}).get("name", "")) for o in explicit]
        synthetic = objects.synthetic
        synthetic_count = 0 if synthetic is None else synthetic.nodes if kind == "nodes" else synthetic.pods
        total = len(explicit_json) + synthetic_count
        items: list[str] = []
        index = start
        while index < total and (limit is None or len(items) < limit):
            if index < len(explicit_json):
                matches = (namespace is None or explicit_ns[index] == namespace) and (
                    name is None or explicit_names[index] == name
                )
                if matches:
                    items.append(explicit_json[index])
            elif synthetic is not None and name is None:
                i = index - len(explicit_json)
                if kind == "nodes":
                    items.append(synthetic.node_json(i))
                elif namespace is None or synthetic.pod_namespace(i) == namespace:
                    items.append(synthetic.pod_json(i))
            index += 1
        return Page(items, index if index < total else None, version)
