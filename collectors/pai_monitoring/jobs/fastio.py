"""Cheap reads of small kernel files.

A cycle reads several files per container, so these use plain ``os`` calls on ``str`` paths: ``pathlib`` and the
``open()`` machinery cost several times more per file, and a container that vanishes mid-read simply gives ``None``.
"""

from __future__ import annotations

import os

_CHUNK = 65536


def read_bytes(path: str) -> bytes | None:
    """The whole file, or ``None`` when it cannot be read (gone, no permission)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:
            return data
        chunks = [data]
        while data:
            data = os.read(fd, _CHUNK)
            chunks.append(data)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_text(path: str) -> str | None:
    data = read_bytes(path)
    return None if data is None else data.decode("utf-8", "replace")


def read_int(path: str) -> int | None:
    """A file holding one integer (``cpuacct.usage``); ``None`` when unreadable or not a number."""
    data = read_bytes(path)
    if data is None:
        return None
    try:
        return int(data)
    except ValueError:
        return None


def read_link(path: str) -> str | None:
    try:
        return os.readlink(path)  # noqa: PTH115 - str path on purpose, this runs for every container each cycle
    except OSError:
        return None
