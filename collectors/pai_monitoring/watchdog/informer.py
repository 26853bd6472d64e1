"""An informer: a local copy of every pod (or every node), kept current by one list and then a watch.

The way Kubernetes' own controllers follow the cluster (client-go's reflector), reduced to what the watchdog needs:

1. list all objects page by page and note the list's ``resourceVersion``;
2. watch from that version with bookmarks: ``ADDED``/``MODIFIED`` replace an object, ``DELETED`` removes it,
   ``BOOKMARK`` only moves the version on (so a reconnect need not replay, or lose, other kinds' history);
3. when the server ends the watch (its ``timeoutSeconds``), open the next one from the last version seen;
4. when the version is too old for the server (``410 Gone``, as an HTTP status or an ``ERROR`` event), list again;
5. when a request fails, try again after a back-off that doubles up to a bound, with jitter.

The API server then sees one watch stream per kind instead of a full list every collection. Each object is turned
into what the caller keeps (``convert``) as it arrives, and its JSON dropped at once.

Bounds, so that a broken or hostile server costs bounded memory and time: each event line is at most
``max_event_bytes`` (a larger one is refused and the cache relisted), the stream must deliver something at least
every ``idle_timeout`` seconds (the socket read timeout; a silent stream is reopened), a watch lasts about
``timeout`` plus ``idle_timeout`` at most even if the server ignores ``timeoutSeconds``, and the cache holds at most
``max_objects`` objects (more is a ``too_many_objects`` failure, and the cache keeps what it had).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pai_monitoring.watchdog import errors
from pai_monitoring.watchdog.errors import ApiFailure
from pai_monitoring.watchdog.report import kv

log = logging.getLogger("pai_monitoring.watchdog")

T = TypeVar("T")

READ_SIZE = 64 * 1024
"""Bytes asked of the socket per read; a read returns what has arrived, so events are seen as they come."""
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
MAX_EMPTY_PAGES = 100
"""Empty list pages in a row after which a list counts as malformed (a server that never ends a list)."""
SHORT_WATCH_SECONDS = 1.0
"""A watch that ends sooner, without a single event, counts as a failure (and is retried after a back-off)."""


class WatchApi(Protocol):
    """What the informer needs of :class:`pai_monitoring.watchdog.client.KubeApi`."""

    def list_pages_versioned(self, kind: str) -> Iterator[tuple[list[dict[str, Any]], str]]: ...

    def open_watch(self, kind: str, resource_version: str, timeout_seconds: int, idle_timeout: float) -> Any: ...


@dataclass(frozen=True)
class WatchBounds:
    """The limits of one informer (the ``watch-*`` and ``cache-max-objects`` options)."""

    timeout: float
    idle_timeout: float
    max_event_bytes: int
    max_objects: int
    backoff_initial: float = BACKOFF_INITIAL_SECONDS
    backoff_max: float = BACKOFF_MAX_SECONDS


@dataclass(frozen=True)
class InformerState:
    synced: bool
    """The first full list has been read."""
    failure: ApiFailure | None
    """Why the last list or watch failed, until one succeeds again."""
    resource_version: str
    objects: int
    unkeyed: int
    """Objects of the last list without a name (they cannot be kept; counted as ``parse`` problems)."""
    relists: int
    """Full lists read to the end (the first one included)."""
    watches: int
    """Watch requests the server accepted."""


class Backoff:
    """Delays between failed attempts: ``initial``, doubling, at most ``maximum``, each stretched by up to 20 %."""

    def __init__(self, initial: float, maximum: float, jitter: Callable[[], float] = random.random) -> None:
        self.initial = initial
        self.maximum = maximum
        self._jitter = jitter
        self._failures = 0

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * 2.0 ** min(self._failures, 30))
        self._failures += 1
        return min(self.maximum, base * (1.0 + 0.2 * self._jitter()))

    def reset(self) -> None:
        self._failures = 0


class _Expired(Exception):
    """The server no longer has the history after our resource version: list again."""


def object_key(raw: Any) -> str | None:
    """``namespace/name`` (pods) or ``name`` (nodes), the API server's own keys; ``None`` when there is no name."""
    metadata = raw.get("metadata") if isinstance(raw, dict) else None
    if not isinstance(metadata, dict) or not metadata.get("name"):
        return None
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata['name']}" if namespace else str(metadata["name"])


def _version_of(raw: Any) -> str | None:
    metadata = raw.get("metadata") if isinstance(raw, dict) else None
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return str(version) if version else None


def read_lines(
    response: Any, what: str, max_bytes: int, deadline: float, clock: Callable[[], float]
) -> Iterator[bytes]:
    """The non-empty lines of a streamed body, each at most ``max_bytes``, until the stream or ``deadline`` ends.

    A line over the cap, or a stream that ends inside a line, is a ``malformed_response`` failure; a read that
    fails (the socket's idle timeout, a cut connection) is classified like any request failure.
    """
    pending = b""
    chunks = _chunks(response)
    while clock() < deadline:
        try:
            data = next(chunks, b"")
        except Exception as exc:
            raise ApiFailure(errors.classify(exc), what, f"watch stream broken: {type(exc).__name__}: {exc}") from exc
        if not data:
            if pending.strip():
                raise ApiFailure(errors.MALFORMED, what, "watch stream ended inside an event")
            return
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            if len(line) > max_bytes:
                raise ApiFailure(errors.MALFORMED, what, f"watch event of {len(line)} bytes, over {max_bytes}")
            if line.strip():
                yield line
        if len(pending) > max_bytes:
            raise ApiFailure(errors.MALFORMED, what, f"watch event of more than {max_bytes} bytes refused")


def _chunks(response: Any) -> Iterator[bytes]:
    """What arrives on the stream, as it arrives: urllib3 2's ``read1``, else (urllib3 1.26) its chunk iterator."""
    if hasattr(response, "read1"):
        while data := response.read1(READ_SIZE):
            yield data
    else:
        yield from response.stream(READ_SIZE)


class Informer(Generic[T]):
    """The cache of one kind (``pods`` or ``nodes``) and the thread that keeps it current.

    ``convert`` turns an object's JSON into what is kept (it must not raise: the watchdog's readers count odd
    objects as problems instead). Readers call :meth:`values` and :meth:`state` from any thread.
    """

    def __init__(
        self,
        api: WatchApi,
        kind: str,
        convert: Callable[[dict[str, Any]], T],
        bounds: WatchBounds,
        *,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.kind = kind
        self._convert = convert
        self.bounds = bounds
        self._clock = clock
        self._backoff = Backoff(bounds.backoff_initial, bounds.backoff_max, jitter)
        self.delays: list[float] = []
        """Back-off delays waited so far (the last 100), for tests and the log."""
        self._lock = threading.Lock()
        self._items: dict[str, T] = {}
        self._version = ""
        self._failure: ApiFailure | None = None
        self._unkeyed = 0
        self._relists = 0
        self._watches = 0
        self._attempts = 0
        """Lists and watch openings finished, either way (readers wait for the next one: :meth:`retry_now`)."""
        self._attempted = threading.Condition(self._lock)
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None

    # --- for readers --------------------------------------------------------------------------------------------

    def values(self) -> list[T]:
        """Every object kept, in no particular order (a copy: the informer goes on changing the cache)."""
        with self._lock:
            return list(self._items.values())

    def state(self) -> InformerState:
        with self._lock:
            return InformerState(
                synced=self._synced.is_set(),
                failure=self._failure,
                resource_version=self._version,
                objects=len(self._items),
                unkeyed=self._unkeyed,
                relists=self._relists,
                watches=self._watches,
            )

    def wait_synced(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) for the first full list, or for an attempt to fail; True once listed."""
        with self._attempted:
            self._attempted.wait_for(lambda: self._synced.is_set() or self._failure is not None, max(0.0, timeout))
        return self._synced.is_set()

    def retry_now(self, timeout: float) -> None:
        """When failing: cut the back-off short and wait (at most ``timeout``) for the outcome of one more attempt.

        A collection calls this so that it reports what holds now: the API server that came back is seen at once,
        not after a back-off of up to ``backoff_max``; one that still fails fails again within the collection.
        """
        with self._attempted:
            if self._failure is None:
                return
            attempts = self._attempts
            self._wake.set()
            self._attempted.wait_for(lambda: self._attempts > attempts, max(0.0, timeout))

    def _attempt_done(self, failure: ApiFailure | None) -> None:
        with self._attempted:
            self._failure = failure
            self._attempts += 1
            self._attempted.notify_all()

    # --- the thread ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"informer-{self.kind}", daemon=True)
            self._thread.start()

    def stop(self, wait: float = 5.0) -> None:
        """End the thread: an open watch is shut down, a back-off wait cut short."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            response = self._response
        if response is not None:
            _shutdown(response)
        if self._thread is not None:
            self._thread.join(wait)

    def _run(self) -> None:
        must_list = True
        while not self._stop.is_set():
            try:
                if must_list:
                    self._relist()
                    must_list = False
                self._watch()
                self._backoff.reset()  # the server ended the watch in order: open the next one at once
            except _Expired:
                log.info("watch_expired %s", kv([("kind", self.kind), ("resource_version", self._version)]))
                must_list = True
            except ApiFailure as failure:
                if self._stop.is_set():
                    break  # stop() cut the stream: not a failure
                self._attempt_done(failure)
                if failure.reason in (errors.MALFORMED, errors.TOO_MANY_OBJECTS, "http_410"):
                    must_list = True  # the stream can no longer be trusted, or the version is gone
                delay = self._backoff.next_delay()
                self.delays = [*self.delays[-99:], delay]
                log.warning(
                    "watch_error %s",
                    kv(
                        [
                            ("kind", self.kind),
                            ("error", failure.reason),
                            ("relist", str(must_list).lower()),
                            ("retry_in_seconds", round(delay, 2)),
                            ("detail", failure.detail),
                        ]
                    ),
                )
                self._pause(delay)
            except Exception:  # a bug must not end the thread silently: log it and start over from a list
                log.exception("informer %s failed; listing again", self.kind)
                must_list = True
                self._pause(self._backoff.next_delay())

    def _pause(self, seconds: float) -> None:
        """The back-off wait, cut short by :meth:`retry_now` or :meth:`stop`."""
        self._wake.wait(seconds)
        self._wake.clear()

    def _relist(self) -> None:
        """Read the full list into the cache: objects listed are kept, objects not listed are removed."""
        seen: set[str] = set()
        unkeyed = 0
        version = ""
        empty_pages = 0
        for items, page_version in self.api.list_pages_versioned(self.kind):
            version = page_version  # every page carries the list's version; the last one counts
            if self._stop.is_set():
                return
            empty_pages = 0 if items else empty_pages + 1
            if empty_pages > MAX_EMPTY_PAGES:  # objects bound the pages of a list; empty ones need a bound too
                raise ApiFailure(errors.MALFORMED, self.kind, f"{empty_pages} empty list pages in a row")
            converted: list[tuple[str, T]] = []
            for raw in items:
                key = object_key(raw)
                if key is None:
                    unkeyed += 1
                    continue
                converted.append((key, self._convert(raw)))
            with self._lock:
                for key, value in converted:
                    if key not in self._items and len(self._items) >= self.bounds.max_objects:
                        raise ApiFailure(errors.TOO_MANY_OBJECTS, self.kind, self._full_message())
                    self._items[key] = value
                    seen.add(key)
        with self._lock:
            for key in [k for k in self._items if k not in seen]:
                del self._items[key]
            self._version = version
            self._unkeyed = unkeyed
            self._relists += 1
            self._synced.set()  # before the notification: a reader woken by it must see the list done
        self._attempt_done(None)
        self._backoff.reset()
        log.info("listed %s", kv([("kind", self.kind), ("objects", len(seen)), ("resource_version", version)]))

    def _full_message(self) -> str:
        return (
            f"more than {self.bounds.max_objects} {self.kind} (raise --collector.kubernetes.cache-max-objects, "
            "and the unit's memory limit with it)"
        )

    def _watch(self) -> None:
        """One watch request: apply its events until the server ends it; raise to relist or to back off."""
        bounds = self.bounds
        response = self.api.open_watch(self.kind, self._version, int(bounds.timeout), bounds.idle_timeout)
        with self._lock:
            self._response = response
            self._watches += 1
        self._attempt_done(None)
        events = 0
        try:
            if self._stop.is_set():
                return
            started = self._clock()
            deadline = started + bounds.timeout + bounds.idle_timeout
            try:
                for line in read_lines(response, self.kind, bounds.max_event_bytes, deadline, self._clock):
                    self._apply(line)
                    events += 1
                    if self._stop.is_set():
                        return
            except ApiFailure as failure:
                if failure.reason != errors.TIMEOUT:
                    raise
                # silent for idle_timeout: the stream (or the path to the server) is dead; open the next one now
                log.info("watch_idle %s", kv([("kind", self.kind), ("seconds", bounds.idle_timeout)]))
                return
            if events == 0 and self._clock() - started < SHORT_WATCH_SECONDS:
                # a server that ends every watch at once would otherwise be asked again and again without pause
                raise ApiFailure(errors.CONNECTION_ERROR, self.kind, "the server ended the watch at once, empty")
        finally:
            with self._lock:
                self._response = None
            _release(response)

    def _apply(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise ApiFailure(errors.MALFORMED, self.kind, f"watch event is not JSON: {exc}") from None
        kind_type = event.get("type") if isinstance(event, dict) else None
        raw = event.get("object") if isinstance(event, dict) else None
        if not isinstance(kind_type, str) or not isinstance(raw, dict):
            raise ApiFailure(errors.MALFORMED, self.kind, f"not a watch event: {line[:100]!r}")
        if kind_type == "ERROR":
            code = raw.get("code")
            if code == 410:
                raise _Expired
            reason = errors.http_reason(code) if isinstance(code, int) else errors.MALFORMED
            raise ApiFailure(reason, self.kind, f"watch ERROR event: {str(raw.get('message', ''))[:200]}")
        if kind_type not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
            raise ApiFailure(errors.MALFORMED, self.kind, f"unknown watch event type {kind_type[:40]!r}")
        version = _version_of(raw)
        key = object_key(raw) if kind_type != "BOOKMARK" else None
        if key is not None and kind_type != "DELETED":
            value = self._convert(raw)
            with self._lock:
                if key not in self._items and len(self._items) >= self.bounds.max_objects:
                    raise ApiFailure(errors.TOO_MANY_OBJECTS, self.kind, self._full_message())
                self._items[key] = value
        elif key is not None:
            with self._lock:
                self._items.pop(key, None)
        if version is not None:
            with self._lock:
                self._version = version


def _shutdown(response: Any) -> None:
    """Unblock a read in progress on ``response`` from another thread (urllib3 2's ``shutdown``)."""
    shutdown = getattr(response, "shutdown", None)
    try:
        if callable(shutdown):
            shutdown()
        else:
            response.close()
    except Exception:  # already closed or half torn down: nothing left to unblock
        log.debug("closing a watch response failed", exc_info=True)


def _release(response: Any) -> None:
    try:
        response.close()
        response.release_conn()
    except Exception:
        log.debug("releasing a watch response failed", exc_info=True)
