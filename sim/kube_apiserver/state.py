"""What the stand-in serves: the cluster's objects, their change history, the fault in force and the credentials.

Everything here can change while the server runs (from a test, the control endpoint or an edited scenario file);
one lock guards it, and each list page is cut from the state of the moment.

Every change of an object takes the next resource version and is kept as a watch event (``ADDED``, ``MODIFIED``,
``DELETED``) in a bounded history, as the API server's watch cache keeps them. A watch starts from the history and
is then fed each new event as it happens (its own bounded queue; a watcher that does not keep up is dropped, as the
real server drops slow watchers). A watch from a resource version whose events have left the history is answered
``410 Gone``, as the real server answers it after a compaction. Changes that cannot be told as events (a new
synthetic cluster) compact the history at once and end every watch with ``410``.
"""

from __future__ import annotations

import collections
import copy
import itertools
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kube_apiserver.objects import build_node, build_pod, dumps, to_json
from kube_apiserver.synthetic import SyntheticCluster

FAULT_MODES = ("none", "down", "slow", "error", "malformed", "reset")
DEFAULT_HISTORY = 10_000
"""Watch events kept; a watch that falls further behind gets ``410 Gone`` (the real cache keeps a similar number)."""
_KIND_NAMES = {"pods": "Pod", "nodes": "Node"}


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


@dataclass(frozen=True)
class Event:
    """One watch event as the server sends it: a JSON line ``{"type": ..., "object": ...}``."""

    resource_version: int
    kind: str
    namespace: str
    line: str


WATCHER_QUEUE = 10_000
"""Events queued for one watcher; one that falls further behind is dropped (it reconnects and resumes)."""


@dataclass(eq=False)
class Watcher:
    """One open watch: the events waiting for it and where it stands."""

    kind: str
    namespace: str | None
    resource_version: int
    """Every event up to this version that the watcher should see has been handed to it."""
    queue: collections.deque[Event] = field(default_factory=collections.deque)
    expired: bool = False
    """Its version is older than the history (or the history was replaced): it must list again (``410 Gone``)."""
    overflowed: bool = False

    def wants(self, event: Event) -> bool:
        return event.kind == self.kind and (self.namespace is None or event.namespace == self.namespace)


@dataclass
class _Objects:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    synthetic: SyntheticCluster | None = None
    synthetic_pods: dict[int, tuple[str, int]] = field(default_factory=dict)
    """Synthetic pods changed since the cluster was made: index -> (kind of pod, resource version)."""


_unnamed = itertools.count()


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` (pods) or ``name`` (nodes), as the API server keys them; a unique stand-in for odd objects."""
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("name"):
        namespace = metadata.get("namespace")
        return f"{namespace}/{metadata['name']}" if namespace else str(metadata["name"])
    return f"<unnamed-{next(_unnamed)}>"


def _namespace(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    return str(metadata.get("namespace") or "") if isinstance(metadata, Mapping) else ""


class ClusterState:
    """The stand-in's cluster and behaviour, safe to change from any thread."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._objects = _Objects()
        self._fault = Fault()
        self._token: str | None = None
        self._readyz = True
        self._resource_version = 1
        self._history: collections.deque[Event] = collections.deque(maxlen=max(1, history))
        self._compacted = 1
        """Events up to this version are gone: a watch must start at or after it."""
        self._churned = 0
        self._watchers: set[Watcher] = set()
        self._requests: collections.deque[tuple[str, str]] = collections.deque(maxlen=10_000)
        self._traffic: collections.Counter[str] = collections.Counter()
        self.listeners: list[Any] = []
        """Callbacks ``f(state)`` run after the fault changes (the server opens or closes its port on ``down``)."""

    # --- events (call with the lock held) -----------------------------------------------------------------------

    def _emit(self, kind: str, kind_type: str, obj: dict[str, Any]) -> None:
        """Give ``obj`` the next resource version and record the event ``kind_type`` (ADDED, MODIFIED, DELETED)."""
        self._resource_version += 1
        metadata = obj.get("metadata")
        if isinstance(metadata, dict):
            metadata["resourceVersion"] = str(self._resource_version)
        self._append(kind, _namespace(obj), kind_type, dumps(obj))

    def _append(self, kind: str, namespace: str, kind_type: str, object_json: str) -> None:
        """Record the event of the current resource version; the oldest one leaves a full history."""
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].resource_version
        line = '{"type":"' + kind_type + '","object":' + object_json + "}"
        event = Event(self._resource_version, kind, namespace, line)
        self._history.append(event)
        for watcher in self._watchers:
            if watcher.wants(event):
                if len(watcher.queue) >= WATCHER_QUEUE:
                    watcher.overflowed = True
                else:
                    watcher.queue.append(event)
        self._changed.notify_all()

    def _replace(self, kind: str, current: dict[str, dict[str, Any]], wanted: Iterable[dict[str, Any]]) -> None:
        """Make ``current`` hold ``wanted``, telling each difference as an event."""
        new: dict[str, dict[str, Any]] = {}
        for obj in wanted:
            new[object_key(obj)] = obj
        for key in [k for k in current if k not in new]:
            gone = current.pop(key)
            self._emit(kind, "DELETED", gone)
        for key, obj in new.items():
            old = current.get(key)
            if old is not None and _same(old, obj):
                continue
            current[key] = obj
            self._emit(kind, "ADDED" if old is None else "MODIFIED", obj)

    def _compact(self, end_watches: bool) -> None:
        """Forget the history: a watch resumed from before now gets ``410 Gone`` (open ones too if ``end_watches``)."""
        self._resource_version += 1
        self._compacted = self._resource_version
        self._history.clear()
        if end_watches:
            for watcher in self._watchers:
                watcher.expired = True
        self._changed.notify_all()

    # --- changing the state -------------------------------------------------------------------------------------

    def set_objects(self, nodes: Iterable[Any] = (), pods: Iterable[Any] = ()) -> None:
        """Replace the explicit nodes and pods; each is a client model (``V1Node``, ``V1Pod``) or its JSON dict.

        Each difference to what was served before becomes a watch event.
        """
        node_dicts = [copy.deepcopy(n) if isinstance(n, dict) else to_json(n) for n in nodes]
        pod_dicts = [copy.deepcopy(p) if isinstance(p, dict) else to_json(p) for p in pods]
        with self._lock:
            self._replace("nodes", self._objects.nodes, node_dicts)
            self._replace("pods", self._objects.pods, pod_dicts)

    def set_synthetic(self, cluster: SyntheticCluster | None) -> None:
        """Serve a generated cluster (or none). Too large to tell as events: the watch history is compacted."""
        with self._lock:
            if cluster is None and self._objects.synthetic is None:
                return
            self._objects = replace(self._objects, synthetic=cluster, synthetic_pods={})
            self._compact(end_watches=True)

    def upsert(self, kind: str, obj: Any) -> str:
        """Add or replace one pod or node (a client model or its JSON); returns ``ADDED``, ``MODIFIED`` or ``""``."""
        data = copy.deepcopy(obj) if isinstance(obj, dict) else to_json(obj)
        with self._lock:
            store = self._store(kind)
            key = object_key(data)
            old = store.get(key)
            if old is not None and _same(old, data):
                return ""
            store[key] = data
            self._emit(kind, "ADDED" if old is None else "MODIFIED", data)
            return "ADDED" if old is None else "MODIFIED"

    def delete(self, kind: str, key: str) -> bool:
        """Delete the pod ``namespace/name`` or the node ``name``; False when there is none."""
        with self._lock:
            gone = self._store(kind).pop(key, None)
            if gone is None:
                return False
            self._emit(kind, "DELETED", gone)
            return True

    def churn_synthetic(self, count: int) -> int:
        """Change ``count`` synthetic pods (running <-> crash-looping, round robin), one MODIFIED event each.

        The benchmark's stand-in for a busy cluster: containers restart, pods become (un)ready.
        """
        with self._lock:
            synthetic = self._objects.synthetic
            if synthetic is None or synthetic.pods == 0:
                return 0
            for _ in range(count):
                index = self._churned % synthetic.pods
                self._churned += 1
                changed = self._objects.synthetic_pods.get(index)
                kind = changed[0] if changed is not None else synthetic.pod_kind(index)
                flipped = {"running": "crashloop", "crashloop": "running"}.get(kind, kind)
                self._resource_version += 1
                self._objects.synthetic_pods[index] = (flipped, self._resource_version)
                text = synthetic.pod_json(index, flipped, self._resource_version)
                self._append("pods", synthetic.pod_namespace(index), "MODIFIED", text)
            return count

    def compact(self) -> int:
        """Drop the watch history now, as etcd compaction does: open watches go on, watches resumed from an older
        version get ``410 Gone``. Returns the oldest version a watch may start from."""
        with self._lock:
            self._compact(end_watches=False)
            return self._resource_version

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
            node = self._objects.nodes.get(name)
            if node is None:
                return False
            node = copy.deepcopy(node)
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
            self._objects.nodes[name] = node
            self._emit("nodes", "MODIFIED", node)
            return True

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
        wanted = (
            SyntheticCluster(
                nodes=int(synthetic.get("nodes", 0)),
                pods=int(synthetic.get("pods", 0)),
                gpus_per_node=int(synthetic.get("gpus_per_node", 8)),
            )
            if synthetic
            else None
        )
        current = self._objects.synthetic
        if wanted is None or current is None or (wanted.nodes, wanted.pods) != (current.nodes, current.pods):
            self.set_synthetic(wanted)
        self.set_token(str(doc["token"]) if doc.get("token") else None)
        self.set_readyz(bool(doc.get("readyz", True)))
        self.set_fault(Fault.from_mapping(doc.get("fault")))

    # --- reading the state --------------------------------------------------------------------------------------

    def _store(self, kind: str) -> dict[str, dict[str, Any]]:
        if kind not in _KIND_NAMES:
            raise ValueError(f"kind must be pods or nodes, got {kind!r}")
        return self._objects.nodes if kind == "nodes" else self._objects.pods

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
        kind = "other"
        if path.startswith("/api/"):
            kind = "watch" if ("watch=true" in query or "watch=1" in query) else "list"
        with self._lock:
            self._traffic[f"{kind}_requests"] += 1

    def count_bytes(self, sent: int) -> None:
        with self._lock:
            self._traffic["bytes_sent"] += sent

    def traffic(self) -> dict[str, int]:
        """Requests by kind (``list_requests``: lists and gets, ``watch_requests``, ``other_requests``: health and
        version) and ``bytes_sent``, since the start: what the API server had to serve (``GET /requests``)."""
        with self._lock:
            counts = dict.fromkeys(("list_requests", "watch_requests", "other_requests", "bytes_sent"), 0)
            counts.update(self._traffic)
            return counts

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
                "raw_nodes": copy.deepcopy(list(self._objects.nodes.values())),
                "raw_pods": copy.deepcopy(list(self._objects.pods.values())),
                "synthetic": {"nodes": synthetic.nodes, "pods": synthetic.pods} if synthetic else None,
                "resource_version": self._resource_version,
                "watch_history_from": self._compacted,
            }

    def watch(self, kind: str, namespace: str | None, resource_version: int) -> Watcher:
        """Open a watch after ``resource_version``: the history's later events are queued for it at once."""
        watcher = Watcher(kind, namespace, resource_version)
        with self._lock:
            if resource_version < self._compacted:
                watcher.expired = True
                return watcher
            watcher.queue.extend(e for e in self._history if e.resource_version > resource_version and watcher.wants(e))
            watcher.resource_version = self._resource_version
            self._watchers.add(watcher)
        return watcher

    def next_events(self, watcher: Watcher, timeout: float) -> list[Event]:
        """The events queued for ``watcher``, waiting up to ``timeout`` for one; moves its version to the latest."""
        with self._changed:
            self._changed.wait_for(lambda: watcher.queue or watcher.expired, timeout=max(0.0, timeout))
            events = list(watcher.queue)
            watcher.queue.clear()
            watcher.resource_version = self._resource_version
            return events

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)

    def page(self, kind: str, namespace: str | None, start: int, limit: int | None, name: str | None = None) -> Page:
        """Up to ``limit`` items of ``kind`` (``pods`` or ``nodes``) from index ``start``, optionally in one namespace.

        ``next_index`` is where the next page starts, or ``None`` at the end.
        """
        with self._lock:
            objects = self._objects
            version = self._resource_version
            explicit = list(self._store(kind).values())
            explicit_json = [dumps(o) for o in explicit]  # small lists: serialised under the lock, as a snapshot
            explicit_ns = [_namespace(o) for o in explicit]
            explicit_names = [str((o.get("metadata") or {}).get("name", "")) for o in explicit]
            changed = dict(objects.synthetic_pods) if kind == "pods" else {}
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
                    kind_of, version_of = changed.get(i, (None, 1))
                    items.append(synthetic.pod_json(i, kind_of, version_of))
            index += 1
        return Page(items, index if index < total else None, version)


def _same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Equal apart from the resource version the stand-in stamps on each object."""

    def strip(obj: Mapping[str, Any]) -> Any:
        metadata = obj.get("metadata")
        if not isinstance(metadata, Mapping):
            return obj
        return {**obj, "metadata": {k: v for k, v in metadata.items() if k != "resourceVersion"}}

    return bool(strip(old) == strip(new))
