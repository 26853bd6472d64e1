"""The HTTP endpoint: ``/metrics``, ``/healthz`` and a landing page at ``/``.

At most ``max_requests`` requests are served at once; one more is answered 503 at once instead of waiting in a
queue. TLS and basic auth come from the web configuration file. A scrape only serialises snapshots that the
collectors' threads have already taken, so it never waits for NVML, cgroups or the Kubernetes API.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import html
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import bcrypt
from prometheus_client import CONTENT_TYPE_LATEST

from pai_monitoring import __version__
from pai_monitoring.runtime.config import ListenAddress
from pai_monitoring.runtime.exposition import Exposition, RejectCounter
from pai_monitoring.runtime.scheduler import CollectorRunner
from pai_monitoring.runtime.webconfig import WebConfig

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 30.0
TLS_HANDSHAKE_TIMEOUT_SECONDS = 10.0


class _Auth:
    """Checks basic auth against bcrypt hashes; a password once verified is remembered by its SHA-256."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = users
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self._users.get(user)
        if hashed is None:
            return False
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed))).digest()
        with self._lock:
            if key in self._verified:
                return True
        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with self._lock:
            self._verified.add(key)
        return True


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def __init__(
        self,
        listen: ListenAddress,
        daemon: str,
        exposition: Exposition,
        runners: Sequence[CollectorRunner],
        web: WebConfig,
        max_requests: int,
        rejected: RejectCounter,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        super().__init__((listen.host, listen.port), _Handler)
        self.daemon_name = daemon
        self.exposition = exposition
        self.runners = runners
        self.slots = threading.BoundedSemaphore(max_requests)
        self.rejected = rejected
        self.auth = _Auth(web.basic_auth_users)
        self.tls_context: ssl.SSLContext | None = web.tls.context() if web.tls else None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the request's own thread, so a slow TLS handshake never holds up accepting other connections.
        if self.tls_context is not None:
            request.settimeout(TLS_HANDSHAKE_TIMEOUT_SECONDS)
            try:
                request = self.tls_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                request.close()
                return
        super().finish_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    timeout = REQUEST_TIMEOUT_SECONDS
    server_version = f"pai-monitoring/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s %s", self.address_string(), format % args)

    def _send(self, code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self) -> None:
        if not self.server.slots.acquire(blocking=False):
            self.server.rejected.inc()
            self._send(503, b"too many concurrent requests\n", "text/plain; charset=utf-8", {"Retry-After": "1"})
            return
        try:
            if self.server.auth.enabled and not self.server.auth.check(self.headers.get("Authorization")):
                self._send(
                    401, b"unauthorized\n", "text/plain; charset=utf-8", {"WWW-Authenticate": 'Basic realm="pai"'}
                )
                return
            path = self.path.split("?", 1)[0]
            route: dict[str, Callable[[], None]] = {
                "/metrics": self._metrics,
                "/healthz": self._healthz,
                "/": self._landing,
            }
            handler = route.get(path)
            if handler is None:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")
            else:
                handler()
        finally:
            self.server.slots.release()

    do_GET = _dispatch
    do_HEAD = _dispatch

    def _metrics(self) -> None:
        body = self.server.exposition.render()
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            self._send(200, gzip.compress(body, 1), CONTENT_TYPE_LATEST, {"Content-Encoding": "gzip"})
        else:
            self._send(200, body, CONTENT_TYPE_LATEST)

    def _healthz(self) -> None:
        self._send(200, b"ok\n", "text/plain; charset=utf-8")

    def _landing(self) -> None:
        rows = []
        now = time.time()
        for runner in self.server.runners:
            st = runner.status()
            age = f"{now - st.last_success_wall:.0f}s ago" if st.last_success_wall else "never"
            state = "ok" if st.success else "failing"
            rows.append(
                f"<tr><td>{html.escape(st.name)}</td><td>{state}</td><td>{st.iterations}</td>"
                f"<td>{age}</td><td>{html.escape(st.last_error or '')}</td></tr>"
            )
        name = html.escape(self.server.daemon_name)
        page = (
            f"<!doctype html><html><head><title>{name}</title></head><body><h1>{name} {__version__}</h1>"
            '<p><a href="/metrics">Metrics</a> &middot; <a href="/healthz">Health</a></p>'
            "<table border=1 cellpadding=4><tr><th>collector</th><th>status</th><th>iterations</th>"
            f"<th>last success</th><th>last error</th></tr>{''.join(rows)}</table></body></html>\n"
        )
        self._send(200, page.encode(), "text/html; charset=utf-8")
