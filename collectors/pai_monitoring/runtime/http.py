"""The HTTP endpoint: ``/metrics``, ``/healthz`` and a landing page at ``/``, on one asyncio event loop.

A client on the network can only cost the exporter a bounded amount, whatever it sends or withholds:

- at most ``max_connections`` connections are open; when one more is accepted, the connection that has waited
  longest for a request is closed (idle keep-alive connections, slow and dripping clients go first; a connection
  whose request is being answered never);
- a request (with its TLS handshake on a new connection) must arrive whole within
  :data:`REQUEST_READ_TIMEOUT_SECONDS` of its first byte, however slowly it drips, and its request line and headers
  may take at most :data:`MAX_HEADER_BYTES` (more is answered 431); bodies are never read;
- a kept-alive connection may wait :data:`IDLE_TIMEOUT_SECONDS` for its next request; an answer must be taken by
  the client within :data:`RESPONSE_WRITE_TIMEOUT_SECONDS`, and at most about :data:`WRITE_CHUNK_BYTES` of it is
  buffered per connection;
- at most ``max_requests`` answers are prepared and written at once; one more is answered 503 at once instead of
  waiting in a queue;
- basic auth runs before a request slot is taken, with its own limits (:mod:`pai_monitoring.runtime.auth`).

Each kind of client fault is counted (``pai_exporter_http_dropped_connections_total``) and logged once a minute at
most, without a traceback; a fault of our own is logged with one. A scrape only serialises snapshots that the
collectors' threads have already taken, so it never waits for NVML, cgroups or the Kubernetes API. HTTP parsing is
h11's; this module owns the connections, the deadlines and the limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import html
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h11
from prometheus_client import CONTENT_TYPE_LATEST

from pai_monitoring import __version__
from pai_monitoring.runtime.auth import AuthGate, Verdict
from pai_monitoring.runtime.config import ListenAddress
from pai_monitoring.runtime.exposition import Exposition, HttpStats
from pai_monitoring.runtime.scheduler import CollectorRunner
from pai_monitoring.runtime.webconfig import WebConfig

log = logging.getLogger(__name__)

REQUEST_READ_TIMEOUT_SECONDS = 10.0
IDLE_TIMEOUT_SECONDS = 120.0
RESPONSE_WRITE_TIMEOUT_SECONDS = 30.0
MAX_HEADER_BYTES = 16 * 1024
READ_CHUNK_BYTES = 4096
WRITE_CHUNK_BYTES = 64 * 1024
LISTEN_BACKLOG = 128
RENDER_THREADS = 4
"""Threads that render and compress answers (the GIL makes more useless); requests beyond wait for one."""
FAULT_LOG_INTERVAL_SECONDS = 60.0
SHUTDOWN_TIMEOUT_SECONDS = 5.0
TEXT = "text/plain; charset=utf-8"


class _ClientFault(Exception):
    """The client broke the rules; the connection is closed and ``reason`` counted."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class _FaultLog:
    """Logs each kind of client fault once per interval, with the count since the last line."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def report(self, reason: str, detail: str, peer: str) -> None:
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < FAULT_LOG_INTERVAL_SECONDS:
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            log.debug("http client fault %s from %s: %s", reason, peer, detail)
            return
        self._last[reason] = now
        more = self._unlogged.pop(reason, 0)
        also = f" ({more} more since the last report)" if more else ""
        log.warning("http client fault %s from %s: %s%s", reason, peer, detail, also)


class _Connection:
    """One open connection, as the connection table sees it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.busy = False
        """True while a request is being answered: such a connection is never evicted."""
        self.waiting_since = time.monotonic()
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)

    def abort(self) -> None:
        self.writer.transport.abort()


class _Response:
    def __init__(
        self,
        status: int,
        body: Sequence[bytes],
        content_type: str = TEXT,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.holds_slot = False
        """True when the answer took a request slot, which it gives back once written."""
        self.headers = [("Content-Type", content_type), ("Content-Length", str(sum(len(p) for p in body))), *headers]


def _check_head_size(size: int) -> None:
    """h11 caps what it buffers of an incomplete request; this caps the whole request line and headers."""
    if size > MAX_HEADER_BYTES:
        raise h11.RemoteProtocolError("request line and headers too long", error_status_hint=431)


def _plain(status: int, text: str, headers: Sequence[tuple[str, str]] = ()) -> _Response:
    return _Response(status, [text.encode()], TEXT, headers)


class ExporterServer:
    """Binds at construction (so a taken port is reported before anything starts), serves in :meth:`serve_forever`."""

    def __init__(
        self,
        listen: ListenAddress,
        daemon: str,
        exposition: Exposition,
        runners: Sequence[CollectorRunner],
        web: WebConfig,
        max_requests: int,
        max_connections: int,
        stats: HttpStats,
    ) -> None:
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        self._sock = socket.create_server((listen.host, listen.port), family=family, backlog=LISTEN_BACKLOG)
        self._sock.setblocking(False)
        self.daemon_name = daemon
        self.exposition = exposition
        self.runners = runners
        self.stats = stats
        self._max_requests = max_requests
        self._max_connections = max_connections
        self._in_flight = 0
        self._auth = AuthGate(web.basic_auth_users)
        self._tls: ssl.SSLContext | None = web.tls.context() if web.tls else None
        self._extra_headers = [("Server", f"pai-monitoring/{__version__}"), *web.headers]
        self._connections: dict[_Connection, None] = {}  # insertion order = order of waiting_since
        self._faults = _FaultLog()
        self._render_pool = ThreadPoolExecutor(
            max_workers=min(RENDER_THREADS, max_requests), thread_name_prefix="render"
        )
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._done = threading.Event()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    # --- lifecycle (called from other threads) --------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Run the event loop until :meth:`shutdown`; call in a thread of its own."""
        asyncio.set_event_loop(self._loop)
        self._loop.set_exception_handler(self._on_loop_error)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()
            self._done.set()

    def shutdown(self) -> None:
        """Stop serving and wait (a bounded time) until the event loop has closed every connection."""
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                self._loop.call_soon_threadsafe(self._request_stop)
            self._done.wait(SHUTDOWN_TIMEOUT_SECONDS)

    def server_close(self) -> None:
        self._sock.close()
        self._auth.close()
        self._render_pool.shutdown(wait=False, cancel_futures=True)

    def _request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(
            self._on_connection, sock=self._sock, limit=MAX_HEADER_BYTES, backlog=LISTEN_BACKLOG
        )
        async with server:
            await self._stopping.wait()
            server.close()
            for connection in list(self._connections):
                connection.abort()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, ConnectionError | ssl.SSLError | TimeoutError):
            log.debug("http: %s: %s", context.get("message"), exc)
            return
        self._faults.report("internal", f"{context.get('message')}: {exc!r}", "-")

    # --- connections ----------------------------------------------------------------------------------------------

    def _admit(self, new: _Connection) -> bool:
        """Make room for ``new``: close the connection that has waited longest for a request, if one must go."""
        if len(self._connections) >= self._max_connections:
            victim = next((c for c in self._connections if not c.busy), None)
            if victim is None:  # every connection is being answered: the newcomer goes
                self._count_drop("connection_limit", "every connection is busy", new.peer)
                return False
            self._forget(victim)
            victim.abort()
            self._count_drop(
                "connection_limit", f"{self._max_connections} connections open; closed the oldest idle", victim.peer
            )
        self._connections[new] = None
        self.stats.open_connections = len(self._connections)
        return True

    def _forget(self, connection: _Connection) -> None:
        self._connections.pop(connection, None)
        self.stats.open_connections = len(self._connections)

    def _set_busy(self, connection: _Connection, busy: bool) -> None:
        connection.busy = busy
        if not busy:  # it waits again: move it to the end of the eviction order
            connection.waiting_since = time.monotonic()
            self._connections.pop(connection, None)
            self._connections[connection] = None

    def _count_drop(self, reason: str, detail: str, peer: str) -> None:
        self.stats.dropped[reason] += 1
        self._faults.report(reason, detail, peer)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writer)
        if not self._admit(connection):
            connection.abort()
            return
        try:
            await self._converse(connection, reader, writer)
        except _ClientFault as fault:
            self._count_drop(fault.reason, str(fault), connection.peer)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("http: connection from %s ended: %s", connection.peer, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("http: internal error while serving %s", connection.peer)
        finally:
            self._forget(connection)
            if not writer.transport.is_closing():
                connection.abort()

    async def _converse(
        self, connection: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + REQUEST_READ_TIMEOUT_SECONDS
        if self._tls is not None:
            try:
                async with asyncio.timeout_at(first_deadline):
                    await writer.start_tls(self._tls)
            except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as exc:
                raise _ClientFault("tls_handshake", f"TLS handshake failed: {exc or 'timeout'}") from None
        writer.transport.set_write_buffer_limits(high=WRITE_CHUNK_BYTES, low=0)
        protocol = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        deadline: float | None = first_deadline
        while True:
            received = await self._read_request(protocol, reader, writer, deadline, loop)
            if received is None:
                return
            request, complete = received
            self._set_busy(connection, True)
            response = await self._answer(request)
            try:
                await self._write(protocol, writer, request, response)
            finally:
                if response.holds_slot:
                    self._in_flight -= 1
            if not complete or protocol.our_state is not h11.DONE or protocol.their_state is not h11.DONE:
                return  # close: an unread request body, or h11 says so (HTTP/1.0, Connection: close)
            protocol.start_next_cycle()
            self._set_busy(connection, False)
            deadline = None

    async def _read_request(
        self,
        protocol: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        deadline: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> tuple[h11.Request, bool] | None:
        """The next request and whether it is complete, or ``None`` when the client closed or a kept-alive
        connection stayed idle too long. A request with a body is answered, but the body is never read, so the
        connection closes after the answer.

        ``deadline`` is fixed for a new connection; on a kept-alive one the request must arrive whole within
        :data:`REQUEST_READ_TIMEOUT_SECONDS` of its first byte, which must come within the idle timeout.
        """
        started = deadline is not None
        received = len(protocol.trailing_data[0])  # a pipelined request may already be buffered
        try:
            async with asyncio.timeout_at(deadline or loop.time() + IDLE_TIMEOUT_SECONDS) as scope:
                while True:
                    event = protocol.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(READ_CHUNK_BYTES)
                        if not data:
                            return None  # the client closed, perhaps half-way through a request: nothing to answer
                        if not started:
                            started = True
                            scope.reschedule(loop.time() + REQUEST_READ_TIMEOUT_SECONDS)
                        received += len(data)
                        protocol.receive_data(data)
                        continue
                    if not isinstance(event, h11.Request):
                        return None  # ConnectionClosed
                    _check_head_size(received - len(protocol.trailing_data[0]))
                    return event, isinstance(protocol.next_event(), h11.EndOfMessage)
        except TimeoutError:
            if not started:
                return None
            raise _ClientFault(
                "read_timeout", f"the request did not arrive within {REQUEST_READ_TIMEOUT_SECONDS:g}s"
            ) from None
        except h11.RemoteProtocolError as exc:
            status, reason = (431, "headers_too_large") if exc.error_status_hint == 431 else (400, "malformed_request")
            # h11 refuses to answer a request it could not parse; this short answer says why, then we close.
            text = {400: "Bad Request", 431: "Request Header Fields Too Large"}[status]
            writer.write(
                f"HTTP/1.1 {status} {text}\r\nContent-Type: {TEXT}\r\nContent-Length: {len(text) + 1}\r\n"
                f"Connection: close\r\n\r\n{text}\n".encode()
            )
            writer.close()
            raise _ClientFault(reason, f"{exc} (answered {status})") from None

    # --- answers --------------------------------------------------------------------------------------------------

    async def _answer(self, request: h11.Request) -> _Response:
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            return _plain(405, "method not allowed\n", [("Allow", "GET, HEAD")])
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers}
        if self._auth.enabled:
            verdict = await self._auth.check(headers.get("authorization"))
            if verdict is Verdict.THROTTLED:
                self.stats.auth_failures["throttled"] += 1
                return _plain(429, "too many password checks in progress\n", [("Retry-After", "1")])
            if verdict is Verdict.DENIED:
                self.stats.auth_failures["denied"] += 1
                return _plain(401, "unauthorized\n", [("WWW-Authenticate", 'Basic realm="pai"')])
        if self._in_flight >= self._max_requests:
            self.stats.rejected += 1
            return _plain(503, "too many concurrent requests\n", [("Retry-After", "1")])
        path = request.target.decode("latin-1").split("?", 1)[0]
        route: dict[str, Callable[[dict[str, str]], _Response]] = {
            "/metrics": self._metrics,
            "/healthz": lambda _headers: _plain(200, "ok\n"),
            "/": lambda _headers: self._landing(),
        }
        handler = route.get(path)
        if handler is None:
            return _plain(404, "not found\n")
        self._in_flight += 1
        try:
            response = await asyncio.get_running_loop().run_in_executor(self._render_pool, handler, headers)
        except BaseException:
            self._in_flight -= 1
            raise
        response.holds_slot = True
        return response

    def _metrics(self, headers: dict[str, str]) -> _Response:
        """Runs in a render thread."""
        parts = self.exposition.parts()
        if "gzip" in headers.get("accept-encoding", ""):
            return _Response(
                200, [gzip.compress(b"".join(parts), 1)], CONTENT_TYPE_LATEST, [("Content-Encoding", "gzip")]
            )
        return _Response(200, parts, CONTENT_TYPE_LATEST)

    def _landing(self) -> _Response:
        rows = []
        now = time.time()
        for runner in self.runners:
            st = runner.status()
            age = f"{now - st.last_success_wall:.0f}s ago" if st.last_success_wall else "never"
            state = "ok" if st.success else "failing"
            rows.append(
                f"<tr><td>{html.escape(st.name)}</td><td>{state}</td><td>{st.iterations}</td>"
                f"<td>{age}</td><td>{html.escape(st.last_error or '')}</td></tr>"
            )
        name = html.escape(self.daemon_name)
        page = (
            f"<!doctype html><html><head><title>{name}</title></head><body><h1>{name} {__version__}</h1>"
            '<p><a href="/metrics">Metrics</a> &middot; <a href="/healthz">Health</a></p>'
            "<table border=1 cellpadding=4><tr><th>collector</th><th>status</th><th>iterations</th>"
            f"<th>last success</th><th>last error</th></tr>{''.join(rows)}</table></body></html>\n"
        )
        return _Response(200, [page.encode()], "text/html; charset=utf-8")

    async def _write(
        self,
        protocol: h11.Connection,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        response: _Response,
    ) -> None:
        """Send the answer in chunks, waiting for the client to take each before the next is buffered."""
        try:
            async with asyncio.timeout(RESPONSE_WRITE_TIMEOUT_SECONDS):
                headers = [*response.headers, *self._extra_headers]
                writer.write(protocol.send(h11.Response(status_code=response.status, headers=headers)))
                if request.method != b"HEAD":
                    for part in response.body:
                        for start in range(0, len(part), WRITE_CHUNK_BYTES):
                            chunk = protocol.send(h11.Data(data=part[start : start + WRITE_CHUNK_BYTES]))
                            writer.write(chunk or b"")
                            await writer.drain()
                writer.write(protocol.send(h11.EndOfMessage()))
                await writer.drain()
        except TimeoutError:
            raise _ClientFault(
                "write_timeout", f"the client did not take the answer within {RESPONSE_WRITE_TIMEOUT_SECONDS:g}s"
            ) from None
