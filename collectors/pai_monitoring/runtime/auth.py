"""Basic auth that costs an attacker more than it costs the exporter.

A bcrypt check is deliberately expensive (about 250 ms of CPU at cost 12), so the checks are fenced off from the
rest of the exporter:

- one check runs at a time, in its own thread, outside the HTTP request slots: a flood of wrong passwords never
  takes a slot a real scrape needs, and at most :data:`MAX_WAITING` requests wait for a check (more are answered
  429 at once);
- a failed check closes the gate for :data:`FAILURE_PENALTY` times as long as it took, so failed checks use at most
  a quarter of one CPU however many clients send them;
- an unknown user name costs a full check against a decoy hash of the same cost as the real ones, so the time of
  a rejection tells nothing about which user names exist;
- a password that verified once is remembered by a SHA-256 digest (bounded), so a real scraper pays bcrypt once,
  not on every scrape;
- a bcrypt error (a password over 72 bytes, a malformed header) is a rejection, never an exception.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from enum import Enum

BCRYPT_MAX_PASSWORD_BYTES = 72
"""bcrypt reads at most 72 bytes; a longer password is refused (as exporter-toolkit does), not truncated."""
FAILURE_PENALTY = 3.0
MAX_WAITING = 4
VERIFIED_CACHE_SIZE = 64


class Verdict(Enum):
    OK = "ok"
    DENIED = "denied"
    """Wrong or missing credentials: 401."""
    THROTTLED = "throttled"
    """Too many checks waiting: 429, without a check."""


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an ``Authorization: Basic ...`` header, or ``None`` when it is not one."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def _verify(password: bytes, hashed: bytes) -> tuple[bool, float]:
    """Runs in the bcrypt thread: (matches, seconds the check took)."""
    import bcrypt  # only an exporter with basic auth users pays for the module

    start = time.perf_counter()
    try:
        ok = bcrypt.checkpw(password, hashed)
    except (ValueError, TypeError):
        ok = False
    return ok, time.perf_counter() - start


class AuthGate:
    """Checks ``Authorization`` headers against bcrypt hashes; use from the event loop's thread only."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._decoy = max(self._users.values(), key=_cost) if self._users else b""
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
        self._lock: asyncio.Lock | None = None
        self._waiting = 0
        self._closed_until = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    async def check(self, header: str | None) -> Verdict:
        credentials = parse_basic(header)
        if credentials is None:
            return Verdict.DENIED
        user, password = credentials
        hashed = self._users.get(user)
        target = hashed if hashed is not None else self._decoy
        key = hashlib.sha256(b"\0".join((user.encode(), password, target))).digest()
        if hashed is not None and key in self._verified:
            self._verified.move_to_end(key)
            return Verdict.OK
        if len(password) > BCRYPT_MAX_PASSWORD_BYTES:
            return Verdict.DENIED
        if self._waiting >= MAX_WAITING:
            return Verdict.THROTTLED
        loop = asyncio.get_running_loop()
        if self._lock is None:
            self._lock = asyncio.Lock()
        self._waiting += 1
        try:
            async with self._lock:
                pause = self._closed_until - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                ok, seconds = await loop.run_in_executor(self._pool, _verify, password, target)
                if ok and hashed is not None:
                    self._remember(key)
                    return Verdict.OK
                self._closed_until = loop.time() + FAILURE_PENALTY * seconds
                return Verdict.DENIED
        finally:
            self._waiting -= 1

    def _remember(self, key: bytes) -> None:
        self._verified[key] = None
        while len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
