"""A local HTTP server that answers like the Kubernetes API server, for tests and demos.

This is a stand-in: there is no Kubernetes API server on the machines where our tests run, so the watchdog's real
client talks to this instead. It serves the paths the watchdog uses (``/api/v1/pods``, ``/api/v1/nodes``,
``/api/v1/namespaces/{ns}/pods``, single objects, ``/healthz``, ``/readyz``, ``/livez``, ``/version``), honours
``limit`` and ``continue`` the way the API server does (opaque continue tokens, ``410 Expired`` when a token's
resource version is gone), answers errors with ``Status`` objects, checks bearer tokens, and plays faults
(port closed, slow answers, HTTP errors, malformed JSON, reset connections) that can be switched while it runs.

Watches (``?watch=1``) stream ``ADDED``/``MODIFIED``/``DELETED`` events as JSON lines over chunked transfer
encoding, from the ``resourceVersion`` asked for (or the current objects as ``ADDED`` first when none is given),
send ``BOOKMARK`` events every ``bookmark_interval`` seconds when ``allowWatchBookmarks`` is set, end after
``timeoutSeconds``, and answer a version older than the kept history with an ``ERROR`` event carrying a
``410 Expired`` Status, as the real API server's watch cache does. It does not implement writes, selectors or
authorisation rules.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kube_apiserver.objects import dumps, status_object
from kube_apiserver.state import ClusterState, Watcher

log = logging.getLogger(__name__)

GIT_VERSION = "v1.30.0-standin"
DEFAULT_BOOKMARK_INTERVAL = 60.0
"""Seconds between bookmarks on a quiet watch (the real API server sends one about every minute)."""
DEFAULT_WATCH_TIMEOUT = 1800.0
"""How long a watch without ``timeoutSeconds`` runs (the real server picks 30-60 minutes)."""
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def encode_continue(index: int, resource_version: int) -> str:
    raw = json.dumps({"v": "standin/v1", "rv": resource_version, "start": index}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_continue(token: str) -> tuple[int, int]:
    """``(start index, resource version)`` from a continue token; ``ValueError`` if it is not one of ours."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["start"]), int(data["rv"])
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"invalid continue token: {exc}") from None


class _Handler(BaseHTTPRequestHandler):
    server: _ApiServer
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-standin"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # --- answers ------------------------------------------------------------------------------------------------

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.state.count_bytes(len(body))

    def _status(self, code: int, message: str, reason: str | None = None) -> None:
        body = dumps(status_object(code, reason or _REASONS.get(code, "Unknown"), message)).encode()
        self._send(code, body)

    # --- request handling ---------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        state.record(path, url.query)
        fault = state.fault
        if fault.applies_to(path):
            if fault.mode == "slow" and self.server.stopping.wait(fault.seconds):
                return
            if fault.mode == "reset":
                self.close_connection = True
                self.connection.close()
                return
            if fault.mode == "error":
                self._status(fault.code, f"stand-in fault: HTTP {fault.code}")
                return
            if fault.mode == "malformed":
                self._send(200, b'{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"na')
                return
        token = state.token
        if token is not None and self.headers.get("Authorization", "") != f"Bearer {token}":
            self._status(401, "Unauthorized")
            return
        if path in ("/healthz", "/livez") or (path == "/readyz" and state.readyz):
            self._send(200, b"ok", "text/plain; charset=utf-8")
            return
        if path == "/version":
            self._send(200, dumps({"major": "1", "minor": "30", "gitVersion": GIT_VERSION}).encode())
            return
        self._serve_objects(path, query)

    def _serve_objects(self, path: str, query: dict[str, str]) -> None:
        parts = path.strip("/").split("/")
        # api/v1/pods | api/v1/nodes | api/v1/nodes/N | api/v1/namespaces/NS/pods | api/v1/namespaces/NS/pods/N
        namespace: str | None = None
        name: str | None = None
        if parts[:2] != ["api", "v1"]:
            self._status(404, "the server could not find the requested resource")
            return
        rest = parts[2:]
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] == "pods":
            namespace, kind, rest = rest[1], "pods", rest[3:]
        elif rest and rest[0] in ("pods", "nodes"):
            kind, rest = rest[0], rest[1:]
        else:
            self._status(404, "the server could not find the requested resource")
            return
        if rest:
            name = rest[0]
            if len(rest) > 1 or (kind == "pods" and namespace is None):
                self._status(404, "the server could not find the requested resource")
                return
        if query.get("watch") in ("true", "1"):
            if name is not None:
                self._status(405, "the stand-in watches collections, not single objects", "MethodNotAllowed")
                return
            self._watch(kind, namespace, query)
            return
        self._list(kind, namespace, name, query)

    # --- watch ---------------------------------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.server.state.count_bytes(len(data))

    def _event(self, kind_type: str, obj: dict[str, Any]) -> None:
        self._chunk((dumps({"type": kind_type, "object": obj}) + "\n").encode())

    def _watch(self, kind: str, namespace: str | None, query: dict[str, str]) -> None:
        """Stream events until ``timeoutSeconds``, the watch falls out of the history, or the server drops it."""
        server, state = self.server, self.server.state
        try:
            since = int(query.get("resourceVersion") or 0)
            timeout = float(query.get("timeoutSeconds") or server.watch_timeout)
        except ValueError as exc:
            self._status(400, f"invalid watch parameter: {exc}")
            return
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        generation = server.watch_generation
        # from a version: subscribed before the answer starts, so no event falls between the two
        watcher = state.watch(kind, namespace, since) if since else None
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.close_connection = True
            end = time.monotonic() + timeout
            if watcher is None:  # no version: the current objects first, as ADDED events (the server's "state" start)
                watcher = state.watch(kind, namespace, self._send_current(kind, namespace))
            self._stream(watcher, end, bookmarks, generation)
        except OSError:  # the client went away, or the server cut the connection
            return
        finally:
            if watcher is not None:
                state.unwatch(watcher)

    def _stream(self, watcher: Watcher, end: float, bookmarks: bool, generation: int) -> None:
        server, state = self.server, self.server.state
        next_bookmark = time.monotonic() + server.bookmark_interval
        while not server.stopping.is_set() and server.watch_generation == generation:
            if watcher.expired:
                message = f"too old resource version: {watcher.resource_version} ({state.resource_version})"
                self._event("ERROR", status_object(410, "Expired", message))
                break
            now = time.monotonic()
            if now >= end or watcher.overflowed:
                break
            if bookmarks and now >= next_bookmark:
                self._event("BOOKMARK", _bookmark(watcher.kind, watcher.resource_version))
                next_bookmark = now + server.bookmark_interval
            wake = min(end, next_bookmark if bookmarks else end, now + 0.25)  # 0.25 s: notice drops and stops
            events = state.next_events(watcher, wake - now)
            if events:
                self._chunk("".join(event.line + "\n" for event in events).encode())
        self.wfile.write(b"0\r\n\r\n")

    def _send_current(self, kind: str, namespace: str | None) -> int:
        page = self.server.state.page(kind, namespace, 0, None)
        for start in range(0, len(page.items), 500):
            lines = "".join('{"type":"ADDED","object":' + item + "}\n" for item in page.items[start : start + 500])
            self._chunk(lines.encode())
        return page.resource_version

    def _list(self, kind: str, namespace: str | None, name: str | None, query: dict[str, str]) -> None:
        state = self.server.state
        start = 0
        if query.get("continue"):
            try:
                start, version = decode_continue(query["continue"])
            except ValueError as exc:
                self._status(400, str(exc))
                return
            if version < state.resource_version - self.server.continue_window:
                self._status(410, "The provided continue parameter is too old to display a consistent list result.")
                return
        limit: int | None = None
        if query.get("limit"):
            try:
                limit = max(1, int(query["limit"]))
            except ValueError:
                self._status(400, f"invalid limit {query['limit']!r}")
                return
        page = state.page(kind, namespace, start, None if name else limit, name)
        if name is not None:
            if not page.items:
                self._status(404, f'{kind} "{name}" not found')
                return
            self._send(200, page.items[0].encode())
            return
        metadata: dict[str, str] = {"resourceVersion": str(page.resource_version)}
        if page.next_index is not None:
            metadata["continue"] = encode_continue(page.next_index, page.resource_version)
        head = dumps({"kind": "PodList" if kind == "pods" else "NodeList", "apiVersion": "v1", "metadata": metadata})
        body = (head[:-1] + ',"items":[' + ",".join(page.items) + "]}").encode()
        self._send(200, body)


class _ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        state: ClusterState,
        continue_window: int,
        bookmark_interval: float,
        watch_timeout: float,
    ) -> None:
        self.state = state
        self.stopping = threading.Event()
        self.continue_window = continue_window
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.watch_generation = 0
        """Raised by :meth:`KubeApiStandIn.drop_watches`: every watch of an older generation ends."""
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        with self._connections_lock:
            self._connections.add(conn)
        return conn, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut every open (keep-alive) connection, as a dying API server does."""
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class KubeApiStandIn:
    """The stand-in API server on ``host:port`` (port 0 picks a free one), plain HTTP or HTTPS.

    ``state`` holds the cluster; changing its fault to ``down`` closes the port (clients get connection refused)
    and any other fault opens it again on the same port.
    """

    def __init__(
        self,
        state: ClusterState | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        continue_window: int = 1_000_000,
        bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL,
        watch_timeout: float = DEFAULT_WATCH_TIMEOUT,
    ) -> None:
        self.state = state or ClusterState()
        self.host = host
        self.port = port
        self._tls: ssl.SSLContext | None = None
        if tls_cert is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(tls_cert, tls_key)
        self._continue_window = continue_window
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self._server: _ApiServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.state.listeners.append(self._on_state_change)

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> KubeApiStandIn:
        with self._lock:
            if self._server is not None:
                return self
            server = _ApiServer(
                (self.host, self.port), self.state, self._continue_window, self.bookmark_interval, self.watch_timeout
            )
            if self._tls is not None:
                server.socket = self._tls.wrap_socket(server.socket, server_side=True)
            self.port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, args=(0.05,), name=f"kube-standin-{self.port}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if thread is not None:
            thread.join(5)

    def drop_watches(self) -> None:
        """End every open watch without its closing chunk, as a broken connection would (clients reconnect)."""
        with self._lock:
            server = self._server
        if server is not None:
            server.watch_generation += 1
            server.drop_connections()

    def _on_state_change(self, state: ClusterState) -> None:
        if state.fault.mode == "down":
            self.stop()
        else:
            self.start()

    def __enter__(self) -> KubeApiStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.state.listeners.remove(self._on_state_change)
        self.stop()


def _bookmark(kind: str, resource_version: int) -> dict[str, Any]:
    """A bookmark carries only the kind and the resource version the watch has reached."""
    return {
        "kind": "Pod" if kind == "pods" else "Node",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(resource_version)},
    }
