"""Length-prefixed pickle frames between the exporter and its NVML worker.

Only the exporter and the worker it started talk over this pipe, so pickle carries the snapshot dataclasses as they
are. The parent side reads with a deadline (:func:`read_frame_by`); the worker side reads blocking (:func:`read_frame`).
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import time
from typing import BinaryIO

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024


class FrameTimeout(TimeoutError):
    """The peer did not send a whole frame before the deadline."""


class PeerClosed(EOFError):
    """The peer closed the pipe (it exited or crashed)."""


def encode(obj: object) -> bytes:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def write_frame(stream: BinaryIO, obj: object) -> None:
    stream.write(encode(obj))
    stream.flush()


def read_frame(stream: BinaryIO) -> object | None:
    """Blocking read of one frame; ``None`` at end of stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    obj: object = pickle.loads(payload)
    return obj


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while remaining:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FrameTimeout("no complete answer before the deadline")
        if not poller.poll(max(1, int(left * 1000))):
            continue
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise PeerClosed("the worker closed its pipe")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame_by(fd: int, deadline: float) -> object:
    """Read one frame from a raw pipe descriptor, giving up at ``deadline`` (``time.monotonic()`` clock)."""
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > MAX_FRAME_BYTES:
        raise PeerClosed(f"frame of {size} bytes is larger than allowed")
    obj: object = pickle.loads(_read_exact(fd, size, deadline))
    return obj
