"""``pai-watchdog`` under its unit's limits against an API server that answers with an oversized page or drips.

The hostile server here is a stand-in for a Kubernetes API server (or whatever answers at its address): it speaks
just enough of the API for the watchdog's health check and lists, on 127.0.0.1, and each of its misbehaviours is
bounded (at most :data:`OVERSIZE_BYTES` per answer, at most :data:`DRIP_SECONDS` of dripping). The watchdog runs
with ``watch`` off, so that every collection lists and meets whatever the server does now; the watch cache lists
through the same requests, and the informer's own tests bound its watch streams.
"""

from __future__ import annotations

import json
import re
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.exporter import Exporter, UnitLimits, get, start_exporter, wait_for

pytestmark = pytest.mark.integration

LIMITS = UnitLimits.of_role("watchdog")
LAUNCH = ("-c", "import sys; from pai_monitoring.cli import watchdog_main; sys.exit(watchdog_main())")
REQUEST_TIMEOUT, COLLECTION_TIMEOUT = 2.0, 4.0
OVERSIZE_BYTES = 200 * 2**20
"""A list page of 200 MiB: decoded whole (about six times its size) it would take more than the unit's MemoryMax."""
DRIP_EVERY, DRIP_SECONDS = 0.25, 60.0

POD = {
    "metadata": {"name": "job-0", "namespace": "default", "uid": "u-0", "labels": {"jobName": "j"},
                 "annotations": {"note": "x" * 200}},
    "spec": {"nodeName": "node1", "containers": [{"name": "main", "image": "job:1", "resources": {}}]},
    "status": {"phase": "Running", "hostIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}],
               "containerStatuses": [{"name": "main", "ready": True, "restartCount": 0,
                                      "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]},
}  # fmt: skip
NODE = {
    "metadata": {"name": "node1", "uid": "n-1"},
    "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
               "conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"nvidia.com/gpu": "4"}},
}  # fmt: skip


class _Handler(socketserver.BaseRequestHandler):
    server: _HostileServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            data = sock.recv(4096)
            if not data:
                return
            head += data
        path = head.split(b" ", 2)[1].split(b"?")[0].decode()
        mode = self.server.mode
        try:
            if path in ("/readyz", "/healthz"):
                self._send(sock, 200, b"ok", "text/plain")
            elif mode == "oversize" and path == "/api/v1/pods":
                self._oversize(sock)
            elif mode == "drip" and path == "/api/v1/pods":
                self._drip(sock)
            elif path in ("/api/v1/pods", "/api/v1/nodes"):
                kind, item = ("PodList", POD) if path.endswith("pods") else ("NodeList", NODE)
                page = {"kind": kind, "apiVersion": "v1", "metadata": {}, "items": [item]}
                self._send(sock, 200, json.dumps(page).encode(), "application/json")
            else:
                self._send(sock, 404, b'{"kind":"Status","code":404}', "application/json")
        except OSError:  # the watchdog hung up on us: that is the point
            return

    @staticmethod
    def _send(sock: socket.socket, status: int, body: bytes, content_type: str) -> None:
        head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body)

    @staticmethod
    def _oversize(sock: socket.socket) -> None:
        """A well-formed but enormous page, with no Content-Length (it ends when the connection closes)."""
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        sock.sendall(b'{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[')
        chunk = b",".join([json.dumps(POD).encode()] * 1000) + b","
        sent = 0
        while sent < OVERSIZE_BYTES:
            sock.sendall(chunk)
            sent += len(chunk)
        sock.sendall(json.dumps(POD).encode() + b"]}")

    @staticmethod
    def _drip(sock: socket.socket) -> None:
        """Headers at once, then the body one byte every DRIP_EVERY seconds: each read is well inside a timeout."""
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
        end = time.monotonic() + DRIP_SECONDS
        while time.monotonic() < end:
            sock.sendall(b" ")
            time.sleep(DRIP_EVERY)


class _HostileServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    mode = "ok"


@pytest.fixture
def hostile() -> Iterator[_HostileServer]:
    server = _HostileServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def watchdog(hostile: _HostileServer, tmp_path: Path) -> Iterator[Exporter]:
    token = tmp_path / "token"
    token.write_text("hostile-test\n")
    exporter = start_exporter(
        [
            f"--collector.kubernetes.api-url=http://127.0.0.1:{hostile.server_address[1]}",
            f"--collector.kubernetes.token-file={token}",
            "--collector.kubernetes.interval=1",
            "--collector.kubernetes.watch=false",
            f"--collector.kubernetes.request-timeout={REQUEST_TIMEOUT:g}",
            f"--collector.kubernetes.timeout={COLLECTION_TIMEOUT:g}",
        ],
        limits=LIMITS,
        command=LAUNCH,
    )
    try:
        yield exporter
    finally:
        exporter.stop()
        print(exporter.output[-3000:])


def _scrape(exporter: Exporter) -> str:
    status, body = get(f"{exporter.url}/metrics")
    assert status == 200
    return body


def _api_error(body: str) -> str | None:
    match = re.search(r'^k8s_api_server_count\{error="([a-z_0-9]+)"', body, re.MULTILINE)
    return match[1] if match else None


def _duration(body: str) -> float:
    match = re.search(r'^pai_scrape_collector_duration_seconds\{collector="kubernetes"\} (\S+)$', body, re.MULTILINE)
    assert match
    return float(match[1])


def test_oversize_page_and_dripping_server_are_reported_in_time_and_the_watchdog_recovers(
    hostile: _HostileServer, watchdog: Exporter
) -> None:
    assert watchdog.cgroup is not None
    pid = watchdog.process.pid
    wait_for(lambda: _api_error(_scrape(watchdog)) == "ok")

    hostile.mode = "oversize"
    wait_for(lambda: _api_error(_scrape(watchdog)) == "response_too_large")
    assert 'pai_scrape_collector_success{collector="kubernetes"} 1.0' in _scrape(watchdog)

    hostile.mode = "drip"
    seen: list[str | None] = []

    def timeout_reported() -> bool:
        body = _scrape(watchdog)
        seen.append(_api_error(body))
        return seen[-1] == "timeout" and _duration(body) < COLLECTION_TIMEOUT

    wait_for(timeout_reported)
    assert None not in seen, "k8s_api_server_count vanished while the API server dripped"

    hostile.mode = "ok"
    wait_for(lambda: _api_error(_scrape(watchdog)) == "ok")
    assert watchdog.process.poll() is None
    assert watchdog.process.pid == pid
    assert watchdog.cgroup.oom_kills() == 0
    assert watchdog.cgroup.failed_forks() == 0
    assert "Traceback" not in watchdog.read_output()
