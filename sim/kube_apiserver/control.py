"""Changing the stand-in while it runs: a small HTTP control endpoint and a scenario-file watcher.

The control endpoint listens on its own port, so it still answers while the API port plays ``down``:

- ``GET /scenario``: the current state as JSON;
- ``PUT /scenario``: replace everything with a scenario document (YAML or JSON body);
- ``PUT /fault``: set the fault, e.g. ``{"mode": "error", "code": 500, "paths": ["/api/v1/pods"]}``;
- ``PATCH /nodes/NAME``: change one node, e.g. ``{"ready": false}`` or ``{"conditions": {"DiskPressure": true}}``.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from kube_apiserver.state import ClusterState, Fault

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
        else:
            self._reply(404, {"error": "not found"})

    def do_PUT(self) -> None:
        try:
            body = self._body()
            if self.path.rstrip("/") == "/scenario":
                self.server.state.load_scenario(body)
            elif self.path.rstrip("/") == "/fault":
                self.server.state.set_fault(Fault.from_mapping(body))
            else:
                self._reply(404, {"error": "not found"})
                return
        except (ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
            self._reply(400, {"error": str(exc)})
            return
        self._reply(200, {"ok": True})

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

    def __init__(self, address: tuple[str, int], state: ClusterState) -> None:
        self.state = state
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
