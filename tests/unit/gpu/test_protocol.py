"""Frames between the exporter and its NVML worker: whole frames arrive, a silent peer hits the deadline."""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Iterator

import pytest

from pai_monitoring.gpu.model import Snapshot
from pai_monitoring.gpu.protocol import FrameTimeout, PeerClosed, encode, read_frame, read_frame_by, write_frame


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_a_snapshot_survives_the_round_trip(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    snapshot = Snapshot(status="ok", driver_version="550.54.15", nvml_calls=7)
    os.write(write_fd, encode(snapshot))
    assert read_frame_by(read_fd, time.monotonic() + 5) == snapshot


def test_a_silent_peer_raises_at_the_deadline(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    os.write(write_fd, encode("x")[:3])  # half a header, then nothing
    with pytest.raises(FrameTimeout):
        read_frame_by(read_fd, time.monotonic() + 0.2)


def test_a_closed_peer_is_reported(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    os.close(write_fd)
    with pytest.raises(PeerClosed):
        read_frame_by(read_fd, time.monotonic() + 5)


def test_blocking_reader_sees_end_of_stream() -> None:
    stream = io.BytesIO()
    write_frame(stream, "collect")
    stream.seek(0)
    assert read_frame(stream) == "collect"
    assert read_frame(stream) is None
