"""The thin adapter between the watchdog and the Kubernetes API: credentials, health check and paginated lists.

It uses the official ``kubernetes`` client for configuration loading, authentication, TLS and requests, but asks
for the raw response body and decodes it with ``json``: turning 150,000 pods into client model objects would cost
seconds and gigabytes the watchdog does not need. The client's own retries are switched off, so a timeout costs one
timeout, not four.

A misbehaving API server (or whatever answers in its place) cannot hold or flood the watchdog:

- every request has a wall-clock deadline (``request-timeout``, and never past the collection's own deadline). The
  client's timeouts apply to each socket read, so a server dripping one byte a second would never trip them; here a
  timer shuts the request's socket down when the deadline passes, in the TLS handshake, the headers or the body;
- an answer is read in chunks up to ``max-response-bytes`` and dropped as soon as it is bigger (at once when its
  ``Content-Length`` says so), error pages included, so an oversized page costs at most the cap, not the page.

Both are reported as a reason (``timeout``, ``response_too_large``) in ``k8s_api_server_count{error}``. A watch
stream is the exception that lasts: its opening is bounded like any request, its events by the informer.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import urllib3
import urllib3.connection
from kubernetes import client, config
from kubernetes.config.incluster_config import InClusterConfigLoader

from pai_monitoring.watchdog import errors
from pai_monitoring.watchdog.errors import ApiFailure
from pai_monitoring.watchdog.options import IN_CLUSTER_CA, IN_CLUSTER_TOKEN, KubernetesOptions

log = logging.getLogger(__name__)

LatencyObserver = Callable[[str, float], None]
"""Called with (``"healthz"``, ``"pods"`` or ``"nodes"``, seconds) after every request, failed ones included."""
READ_CHUNK_BYTES = 256 * 1024
_PATHS = {"pods": "/api/v1/pods", "nodes": "/api/v1/nodes"}
T = TypeVar("T")


def build_configuration(options: KubernetesOptions) -> client.Configuration:
    """A client configuration from exactly one credential source; TLS verification stays on unless told."""
    configuration = client.Configuration()
    if options.kubeconfig is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(options.kubeconfig), client_configuration=configuration, persist_config=False
        )
    elif options.in_cluster:
        loader = InClusterConfigLoader(token_filename=str(IN_CLUSTER_TOKEN), cert_filename=str(IN_CLUSTER_CA))  # type: ignore[no-untyped-call]
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    else:
        configuration.host = str(options.api_url).rstrip("/")
        if options.ca_file is not None:
            configuration.ssl_ca_cert = str(options.ca_file)
    if str(configuration.host).startswith("http://"):
        log.warning("the API server URL %s is plain HTTP: the bearer token travels unencrypted", configuration.host)
    if options.insecure_skip_tls_verify:
        log.warning("TLS verification of the API server is off (insecure-skip-tls-verify): do not use in production")
        configuration.verify_ssl = False
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    configuration.retries = urllib3.util.Retry(total=0, redirect=False, raise_on_status=False)
    return configuration


class _Request:
    """One request's wall-clock deadline: past it, every socket the request used is shut down from a timer thread.

    The sockets are registered as duplicates of their descriptors (a shutdown acts on the socket, whichever
    descriptor names it), from the moment the TCP connection exists, before TLS wraps it: a shutdown reaches the
    handshake as well as the headers and the body.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._done = False
        self.fired = False

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            if self._done:
                return
            # os.dup, not sock.dup(): an SSLSocket refuses dup(), and the shutdown must reach the socket under TLS
            try:
                duplicate = socket.socket(fileno=os.dup(sock.fileno()))
            except OSError:  # closed already: nothing left to cut
                return
            self._sockets.append(duplicate)
            if self.fired:
                _shut(duplicate)

    def abort(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            for sock in self._sockets:
                _shut(sock)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Deadlines:
    """The request each thread has in flight. The collector's thread and the watch cache's threads share one
    client, so a deadline shuts down only the sockets of its own thread's request, never a watch stream."""

    def __init__(self) -> None:
        self._local = threading.local()

    @contextlib.contextmanager
    def bound(self, seconds: float) -> Iterator[_Request]:
        request = _Request()
        timer = threading.Timer(seconds, request.abort)
        timer.daemon = True
        self._local.request = request
        timer.start()
        try:
            yield request
        finally:
            timer.cancel()
            self._local.request = None
            request.finish()

    def track(self, sock: socket.socket | None) -> None:
        """Called by a connection in the thread that uses it: the socket joins that thread's request, if any."""
        request: _Request | None = getattr(self._local, "request", None)
        if request is not None and sock is not None:
            request.track(sock)


Conn = TypeVar("Conn", bound=urllib3.connection.HTTPConnection)


def _tracked_pools(deadlines: _Deadlines) -> dict[str, type[urllib3.HTTPConnectionPool]]:
    """urllib3 pool classes whose connections hand their sockets to the request in flight in their thread: a new
    connection when it connects, a kept-alive one when it sends the next request."""

    def tracked(base: type[Conn]) -> type[Conn]:
        def _new_conn(self: Conn) -> socket.socket:
            sock = base._new_conn(self)
            deadlines.track(sock)
            return sock

        def request(self: Conn, *args: Any, **kwargs: Any) -> None:
            deadlines.track(self.sock)
            base.request(self, *args, **kwargs)

        return type(f"Deadline{base.__name__}", (base,), {"_new_conn": _new_conn, "request": request})

    class DeadlineHTTPConnectionPool(urllib3.HTTPConnectionPool):
        ConnectionCls = tracked(urllib3.connection.HTTPConnection)

    class DeadlineHTTPSConnectionPool(urllib3.HTTPSConnectionPool):
        ConnectionCls = tracked(urllib3.connection.HTTPSConnection)

    return {"http": DeadlineHTTPConnectionPool, "https": DeadlineHTTPSConnectionPool}


class KubeApi:
    """The API calls the watchdog makes. Every method raises :class:`ApiFailure` on any failure."""

    def __init__(self, options: KubernetesOptions, observe: LatencyObserver | None = None) -> None:
        self.options = options
        self.configuration = build_configuration(options)
        self.api_client = client.ApiClient(self.configuration)
        self._deadlines = _Deadlines()
        pool_manager = self.api_client.rest_client.pool_manager
        if type(pool_manager) in (urllib3.PoolManager, urllib3.ProxyManager):
            pool_manager.pool_classes_by_scheme = _tracked_pools(self._deadlines)
        else:  # a SOCKS proxy brings its own connection classes
            log.warning("requests through a SOCKS proxy have per-read timeouts only, no wall-clock deadline")
        self._observe = observe or (lambda kind, seconds: None)
        self._health_path = "/readyz"
        self._collection = threading.local()

    @property
    def host(self) -> str:
        """The API server URL: the ``url`` label of ``k8s_api_server_count`` (its ``host_ip`` is the URL's host)."""
        return str(self.configuration.host)

    def begin_collection(self, budget_seconds: float) -> None:
        """No request this thread makes in this collection may run past ``budget_seconds`` from now."""
        self._collection.deadline = time.monotonic() + budget_seconds

    def refresh_token(self) -> None:
        """Re-read ``token-file`` (tokens rotate); a missing or empty file is a ``credentials_error`` failure."""
        if self.options.token_file is None:
            return
        try:
            token = self.options.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ApiFailure(errors.CREDENTIALS, "token", f"cannot read {self.options.token_file}: {exc}") from None
        if not token:
            raise ApiFailure(errors.CREDENTIALS, "token", f"{self.options.token_file} is empty")
        self.configuration.api_key = {"authorization": token}
        self.configuration.api_key_prefix = {"authorization": "Bearer"}

    def _timed(self, kind: str, call: Callable[[float], T], observe: bool = True) -> T:
        """Run one request with its wall-clock deadline; every failure becomes an :class:`ApiFailure`."""
        start = time.monotonic()
        budget = self.options.request_timeout
        collection_deadline: float | None = getattr(self._collection, "deadline", None)
        if collection_deadline is not None:
            budget = min(budget, collection_deadline - start)
        if budget <= 0:
            raise ApiFailure(errors.TIMEOUT, kind, "the collection deadline passed before this request")
        try:
            with self._deadlines.bound(budget) as request:
                try:
                    return call(budget)
                except Exception as exc:
                    if request.fired:
                        raise ApiFailure(errors.TIMEOUT, kind, f"no complete answer within {budget:.3g}s") from None
                    if isinstance(exc, ApiFailure):
                        raise
                    raise ApiFailure(errors.classify(exc), kind, _describe(exc)) from exc
        finally:
            if observe:
                self._observe(kind, time.monotonic() - start)

    def _send(
        self, path: str, query: list[tuple[str, Any]], accept: str, timeout: float | tuple[float, float]
    ) -> urllib3.HTTPResponse:
        """GET ``path`` through the client (its authentication, TLS and proxy settings); the response unread."""
        method, url, headers, _, _ = self.api_client.param_serialize(
            "GET", path, query_params=query, header_params={"Accept": accept}, auth_settings=["BearerToken"]
        )
        response: urllib3.HTTPResponse = self.api_client.call_api(
            method, url, headers, _request_timeout=timeout
        ).response
        return response

    def _get(self, kind: str, path: str, query: list[tuple[str, Any]], accept: str, budget: float) -> bytearray:
        """GET ``path``: the body of a 2xx answer, read up to the byte cap; anything else raises."""
        response = self._send(path, query, accept, budget)
        body = self._finish(response, kind)
        if not 200 <= response.status <= 299:
            raise ApiFailure(errors.http_reason(response.status), kind, _describe_error(response.status, body))
        return body

    def _finish(self, response: urllib3.HTTPResponse, kind: str) -> bytearray:
        """Read the rest of ``response`` up to the byte cap and release its connection."""
        complete = False
        try:
            body = self._read_capped(response, kind)
            complete = True
        finally:
            if not complete:  # do not hand a half-read connection back to the pool
                response.close()
            response.release_conn()
        return body

    def _read_capped(self, response: urllib3.HTTPResponse, kind: str) -> bytearray:
        limit = self.options.max_response_bytes
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise ApiFailure(errors.TOO_LARGE, kind, f"the answer is {length} bytes, over the cap of {limit}")
        body = bytearray()
        for chunk in response.stream(READ_CHUNK_BYTES):
            body += chunk
            if len(body) > limit:
                raise ApiFailure(errors.TOO_LARGE, kind, f"the answer passed the cap of {limit} bytes; dropped")
        return body

    def check_health(self) -> None:
        """``GET /readyz``, or ``/healthz`` on servers without it (they answer 404); "ok" means healthy."""
        try:
            self._check(self._health_path)
        except ApiFailure as failure:
            if failure.reason != "http_404" or self._health_path != "/readyz":
                raise
            log.info("API server has no /readyz; using /healthz")
            self._health_path = "/healthz"
            self._check(self._health_path)

    def _check(self, path: str) -> None:
        body = self._timed("healthz", lambda budget: self._get("healthz", path, [], "text/plain", budget))
        if body.strip() != b"ok":
            raise ApiFailure(errors.MALFORMED, "healthz", f"{path} answered {bytes(body[:60])!r} instead of 'ok'")

    def list_pages(self, kind: str) -> Iterator[list[dict[str, Any]]]:
        """The items of ``pods`` (all namespaces) or ``nodes``, one page (``page-size`` objects) at a time."""
        for items, _version in self.list_pages_versioned(kind):
            yield items

    def list_pages_versioned(self, kind: str) -> Iterator[tuple[list[dict[str, Any]], str]]:
        """Like :meth:`list_pages`, each page with the list's ``resourceVersion`` (where a watch takes over)."""
        token: str | None = None
        while True:
            query: list[tuple[str, Any]] = [("limit", self.options.page_size)]
            if token is not None:
                query.append(("continue", token))
            page = self._timed(kind, functools.partial(self._get_page, kind, _PATHS[kind], query))
            items = page.get("items")
            metadata = page.get("metadata")
            if not isinstance(items, list) or not isinstance(metadata, dict):
                raise ApiFailure(errors.MALFORMED, kind, "list without items or metadata")
            yield items, str(metadata.get("resourceVersion") or "")
            token = metadata.get("continue") or None
            if token is None:
                return

    def open_watch(self, kind: str, resource_version: str, timeout_seconds: int, idle_timeout: float) -> Any:
        """Start a watch of ``pods`` or ``nodes`` after ``resource_version``, with bookmarks; the raw response.

        The answer's status and headers must arrive within request-timeout (wall clock, like any request); an error
        answer is read up to the byte cap. The server ends the stream after ``timeout_seconds``; ``idle_timeout``
        bounds every read of it (no byte for that long is a timeout). Reading the stream is the caller's (the
        informer, which bounds each event and the stream's length).
        """
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout_seconds),
        ]

        def start(budget: float) -> urllib3.HTTPResponse:
            response = self._send(_PATHS[kind], query, "application/json", (budget, idle_timeout))
            if not 200 <= response.status <= 299:
                body = self._finish(response, kind)
                raise ApiFailure(errors.http_reason(response.status), kind, _describe_error(response.status, body))
            return response

        return self._timed(kind, start, observe=False)

    def _get_page(self, kind: str, path: str, query: list[tuple[str, Any]], budget: float) -> dict[str, Any]:
        body = self._get(kind, path, query, "application/json", budget)
        try:
            page = json.loads(body)
        except ValueError as exc:
            raise ApiFailure(errors.MALFORMED, kind, f"invalid JSON: {exc}") from None
        if not isinstance(page, dict):
            raise ApiFailure(errors.MALFORMED, kind, f"expected a list object, got {type(page).__name__}")
        return page

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]


def _describe_error(status: int, body: bytearray) -> str:
    """A one-line description of an error answer for the log (the metric label gets only the reason)."""
    message = ""
    try:
        decoded = json.loads(body)
        if isinstance(decoded, dict):
            message = str(decoded.get("message", ""))
    except ValueError:
        message = bytes(body[:120]).decode(errors="replace")
    return f"HTTP {status}: {message}".strip().rstrip(":")


def _describe(exc: BaseException) -> str:
    """A one-line description of a failed request for the log."""
    text = str(exc).replace("\n", " ")
    return f"{type(exc).__name__}: {text[:200]}"
