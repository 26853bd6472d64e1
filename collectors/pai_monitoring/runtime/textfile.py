"""Writes the exposition into node_exporter's textfile directory, atomically.

The text goes to a temporary file in the same directory whose name does not end in ``.prom`` (so node_exporter
never reads it), is flushed and fsynced, and is then renamed over ``<name>.prom``; the directory is fsynced so the
rename survives a power cut. A writer killed at any point leaves either the old file or the new one, never a part.

The directory is shared with node_exporter and writable by a group, so a member of that group must not be able to
redirect the write: the temporary name carries 64 random bits (it cannot be guessed and planted in advance), and it
is created with ``O_EXCL | O_NOFOLLOW`` (an existing file or a symlink of that name is an error, never followed).
The rename replaces whatever entry ``<name>.prom`` is, a symlink included, without following it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_ATTEMPTS = 5


def _create_temporary(path: Path) -> tuple[Path, int]:
    """A new temporary file beside ``path`` with an unpredictable name, opened for writing."""
    for _ in range(_CREATE_ATTEMPTS):
        tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}{TMP_SUFFIX}")
        try:
            return tmp, os.open(tmp, _CREATE_FLAGS, 0o644)
        except FileExistsError:  # 2**-64 by chance; more often someone planted it: try another name
            log.warning("textfile temporary %s already exists; not touching it", tmp)
    raise FileExistsError(f"could not create a temporary file beside {path} in {_CREATE_ATTEMPTS} attempts")


def atomic_write(path: Path, data: bytes) -> None:
    tmp, fd = _create_temporary(path)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(directory: Path, name: str) -> None:
    """Temporary files of writers that died mid-write (unlinking a symlink removes the link, not its target)."""
    for tmp in directory.glob(f".{name}.*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            tmp.unlink()


class TextfileWriter:
    """Rewrites ``<directory>/<name>`` after collector updates (at most once per ``min_gap`` seconds) and every
    ``refresh`` seconds, so expired snapshots also leave the file."""

    def __init__(
        self, directory: Path, name: str, render: Callable[[], bytes], refresh: float, min_gap: float = 1.0
    ) -> None:
        self.path = directory / name
        self._render = render
        self._refresh = refresh
        self._min_gap = min_gap
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="textfile-writer", daemon=True)
        remove_stale_temporaries(directory, name)

    def notify(self) -> None:
        self._wake.set()

    def write_now(self) -> None:
        try:
            atomic_write(self.path, self._render())
        except OSError as exc:
            log.error("cannot write textfile %s: %s", self.path, exc)  # noqa: TRY400 - the message says it all

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._refresh)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.write_now()
            self._stop.wait(self._min_gap)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5.0)
