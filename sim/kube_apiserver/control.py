"""Changing the stand-in while it runs: a small HTTP control endpoint and a scenario-file watcher.

The control endpoint listens on its own port, so it still answers while the API port plays ``down``:

- ``GET /scenario``: the current state as JSON;
- ``GET /requests``: what the API port has served so far: list, watch and other requests, bytes;
- ``PUT /scenario``: replace everything with a scenario document (YAML or JSON body);
- ``PUT /fault``: set the fault, e.g. ``{"mode": "error", "code": 500, "paths": ["/api/v1/pods"]}``;
- ``PATCH /nodes/NAME``: change one node, e.g. ``{"ready": false}`` or ``{"conditions": {"DiskPressure": true}}``;
- ``PUT /nodes/NAME``, ``PUT /pods/NAMESPACE/NAME``: add or replace one object, from a short description as in a
  scenario file (``{"ip": "10.0.0.9", "gpus": 8}``, ``{"labels": {"jobName": "j"}, "node": "n1"}``) or a full
  object (a body with ``metadata``);
- ``DELETE /nodes/NAME``, ``DELETE /pods/NAMESPACE/NAME``: delete one object;
- ``POST /compact``: drop the watch history (as etcd compaction does): watches resumed from before get ``410``;
- ``POST /watches/drop``: cut every open watch connection (clients see a broken stream and reconnect);
- ``POST /churn``: change synthetic pods, e.g. ``{"pods": 100}``, one ``MODIFIED`` event each.

Each change of an object is a watch event, so the watchdog's informer sees it without listing again.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kube_apiserver.objects import build_node, build_pod
from kube_apiserver.state import ClusterState, Fault

if TYPE_CHECKING:
    from kube_apiserver.server import KubeApiStandIn

log = logging.getLogger(__name__)


def load_scenario_file(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a scenario is a mapping, got {type(doc).__name__}")
    return doc


class _ControlHandler(BaseHTTPRequestHandler):
    server: ControlServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.info("control %s", format % args)

    def _reply(self, code: int, data: object) -> None:
        body = json.dumps(data, indent=1).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return yaml.safe_load(self.rfile.read(length).decode("utf-8")) if length else {}

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/scenario":
            self._reply(200, self.server.state.describe())
        elif self.path.rstrip("/") == "/requests":
            self._reply(200, self.server.state.traffic())
        else:
            self._reply(404, {"error": "not found"})

    def do_PUT(self) -> None:
        parts = self.path.strip("/").split("/")
        try:
            body = self._body()
            if parts == ["scenario"]:
                self.server.state.load_scenario(body)
            elif parts == ["fault"]:
                self.server.state.set_fault(Fault.from_mapping(body))
            elif len(parts) == 2 and parts[0] == "nodes":
                obj = body if "metadata" in body else build_node({**body, "name": parts[1]})
                self._reply(200, {"event": self.server.state.upsert("nodes", obj)})
                return
            elif len(parts) == 3 and parts[0] == "pods":
                obj = body if "metadata" in body else build_pod({**body, "namespace": parts[1], "name": parts[2]})
                self._reply(200, {"event": self.server.state.upsert("pods", obj)})
                return
            else:
                self._reply(404, {"error": "not found"})
                return
        except (ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as exc:
            self._reply(400, {"error": str(exc)})
            return
        self._reply(200, {"ok": True})

    def do_DELETE(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "nodes":
            found = self.server.state.delete("nodes", parts[1])
        elif len(parts) == 3 and parts[0] == "pods":
            found = self.server.state.delete("pods", f"{parts[1]}/{parts[2]}")
        else:
            self._reply(404, {"error": "not found"})
            return
        self._reply(200 if found else 404, {"ok": found})

    def do_POST(self) -> None:
        path = self.path.rstrip("/")
        try:
            body = self._body()
            if path == "/compact":
                self._reply(200, {"resource_version": self.server.state.compact()})
            elif path == "/churn":
                self._reply(200, {"changed": self.server.state.churn_synthetic(int(body.get("pods", 0)))})
            elif path == "/watches/drop" and self.server.api is not None:
                self.server.api.drop_watches()
                self._reply(200, {"ok": True})
            else:
                self._reply(404, {"error": "not found"})
        except (ValueError, TypeError, AttributeError, yaml.YAMLError) as exc:
            self._reply(400, {"error": str(exc)})

    def do_PATCH(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "nodes":
            self._reply(404, {"error": "not found"})
            return
        try:
            found = self.server.state.patch_node(parts[1], self._body())
        except (ValueError, TypeError, yaml.YAMLError) as exc:
            self._reply(400, {"error": str(exc)})
            return
        self._reply(200 if found else 404, {"ok": found})


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: ClusterState, api: KubeApiStandIn | None = None) -> None:
        self.state = state
        self.api = api
        """The API server, for the hooks that act on its connections (``/watches/drop``)."""
        super().__init__(address, _ControlHandler)


class ScenarioWatcher:
    """Reloads a scenario file into the state whenever its modification time changes (checked every ``period``)."""

    def __init__(self, path: Path, state: ClusterState, period: float = 1.0) -> None:
        self.path = path
        self.state = state
        self.period = period
        self._stop = threading.Event()
        self._mtime: float | None = None
        self._thread = threading.Thread(target=self._run, name="scenario-watcher", daemon=True)

    def load(self) -> None:
        self._mtime = self.path.stat().st_mtime
        self.state.load_scenario(load_scenario_file(self.path))
        log.info("loaded scenario %s", self.path)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                if self.path.stat().st_mtime != self._mtime:
                    self.load()
            except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
                log.warning("scenario %s not reloaded: %s", self.path, exc)
