"""Hostile HTTP clients on loopback, and a Prometheus-like scraper to run beside them.

Every client here is bounded: a fixed number of connection slots, a fixed duration, a fixed number of bytes per
connection and at most one reconnect per slot per :data:`RECONNECT_DELAY`. All of them target 127.0.0.1 only.
"""

from __future__ import annotations

import errno
import resource
import selectors
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

RECONNECT_DELAY = 1.0
SLOW_EVERY = 1.0
"""A slow client sends one byte of its request a second."""
DRIP_EVERY = 3.0
"""A dripping client sends one byte every three seconds: each read is far inside any per-read timeout."""
FLOOD_LIMIT = 100 * 64 * 1024
"""A header flood sends at most 100 headers of 64 KiB per connection (what the old server read before any check)."""
_ENDLESS_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100_000
_FLOOD_HEADER = b"X-Flood: " + b"f" * (64 * 1024 - 11) + b"\r\n"


def raise_open_files(needed: int) -> None:
    """This process holds one socket per slot: raise the soft open-file limit as far as the hard one allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@dataclass
class _Slot:
    kind: str
    sock: socket.socket | None = None
    sent: int = 0
    next_send: float = 0.0
    reopen_at: float = 0.0
    answer: bytes = b""


@dataclass
class SwarmReport:
    connects: int = 0
    closed_by_server: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    max_open: int = 0


class Swarm:
    """``count`` connection slots of the given kinds against 127.0.0.1:``port`` for ``duration`` seconds.

    Kinds: ``idle`` (connects, sends nothing), ``slow`` and ``drip`` (a request that never ends, one byte every
    :data:`SLOW_EVERY` / :data:`DRIP_EVERY` seconds), ``flood`` (a request line, then 64 KiB headers as fast as the
    server takes them, up to :data:`FLOOD_LIMIT`). A slot whose connection the server closes reconnects after
    :data:`RECONNECT_DELAY`, so the pressure stays on for the whole duration.
    """

    def __init__(self, port: int, kinds: dict[str, int], duration: float) -> None:
        self.port = port
        self.duration = duration
        self.slots = [_Slot(kind) for kind, n in kinds.items() for _ in range(n)]
        self.report = SwarmReport()
        self._thread = threading.Thread(target=self._run, name="swarm", daemon=True)
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()

    def start(self) -> Swarm:
        raise_open_files(len(self.slots) + 256)
        self._thread.start()
        return self

    def join(self) -> SwarmReport:
        self._thread.join(self.duration + 30)
        return self.report

    def stop(self) -> None:
        self._stop.set()

    def _open(self, slot: _Slot, now: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            slot.reopen_at = now + RECONNECT_DELAY
            return
        slot.sock, slot.sent, slot.answer = sock, 0, b""
        slot.next_send = now
        self.report.connects += 1
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if slot.kind == "flood" else 0)
        self._selector.register(sock, events, slot)

    def _close(self, slot: _Slot, now: float, by_server: bool) -> None:
        if slot.sock is None:
            return
        self._selector.unregister(slot.sock)
        slot.sock.close()
        slot.sock = None
        slot.reopen_at = now + RECONNECT_DELAY
        if by_server:
            self.report.closed_by_server += 1
            if slot.answer.startswith(b"HTTP/1."):
                self.report.statuses[int(slot.answer[9:12])] += 1

    def _on_event(self, slot: _Slot, mask: int, now: float) -> None:
        assert slot.sock is not None
        if mask & selectors.EVENT_READ:
            try:
                data = slot.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._close(slot, now, by_server=True)
                return
            if data and len(slot.answer) < 64:
                slot.answer += data[: 64 - len(slot.answer)]
        if mask & selectors.EVENT_WRITE and slot.kind == "flood":
            chunk = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" if slot.sent == 0 else b"") + _FLOOD_HEADER
            try:
                slot.sent += slot.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close(slot, now, by_server=True)
                return
            if slot.sent >= FLOOD_LIMIT:
                self._selector.modify(slot.sock, selectors.EVENT_READ, slot)

    def _trickle(self, slot: _Slot, now: float) -> None:
        if slot.sock is None or slot.kind not in ("slow", "drip") or now < slot.next_send:
            return
        slot.next_send = now + (SLOW_EVERY if slot.kind == "slow" else DRIP_EVERY)
        try:
            slot.sent += slot.sock.send(_ENDLESS_REQUEST[slot.sent : slot.sent + 1])
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(slot, now, by_server=True)

    def _run(self) -> None:
        end = time.monotonic() + self.duration
        try:
            while not self._stop.is_set() and (now := time.monotonic()) < end:
                for slot in self.slots:
                    if slot.sock is None and now >= slot.reopen_at:
                        self._open(slot, now)
                    self._trickle(slot, now)
                self.report.max_open = max(self.report.max_open, sum(s.sock is not None for s in self.slots))
                for key, mask in self._selector.select(timeout=0.05):
                    self._on_event(key.data, mask, time.monotonic())
        finally:
            for slot in self.slots:
                self._close(slot, time.monotonic(), by_server=False)
            self._selector.close()


@dataclass
class ScrapeLog:
    statuses: list[int | str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


class Scraper:
    """A Prometheus-like client: a fresh connection and a 10 s timeout for each scrape, one every ``every`` s."""

    def __init__(self, url: str, every: float = 0.5, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.every = every
        self.headers = headers or {}
        self.log = ScrapeLog()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def start(self) -> Scraper:
        self._thread.start()
        return self

    def stop(self) -> ScrapeLog:
        self._stop.set()
        self._thread.join(30)
        return self.log

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            request = urllib.request.Request(self.url, headers=self.headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
                    status: int | str = int(response.status)
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError as exc:
                status = type(exc).__name__
            self.log.statuses.append(status)
            self.log.seconds.append(time.monotonic() - start)
            self._stop.wait(max(0.0, self.every - (time.monotonic() - start)))
