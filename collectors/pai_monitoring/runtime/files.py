"""Reading the small text files an operator hands a daemon (configuration, web configuration), defensively.

A path that names a FIFO, a device or a directory is refused before it is read (reading a FIFO would block the
daemon before it even starts), a file larger than a configuration file can reasonably be is refused instead of
being read into memory, and text that is not UTF-8 is a configuration error, not a traceback.

YAML is parsed here, and the parser is imported only when a file is read: a daemon started with flags alone never
loads it (about 0.75 MiB).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Any

from pai_monitoring.runtime.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
"""No configuration file of this suite comes near 1 MiB; a bigger one is a mistake (or a device)."""


def read_config_text(path: Path, flag: str, limit: int = MAX_CONFIG_BYTES) -> str:
    """The text of a regular file of at most ``limit`` bytes; anything else raises :class:`ConfigError`."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat below refuses it anyway.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        reason = "does not exist" if exc.errno == errno.ENOENT else f"cannot be opened: {exc.strerror}"
        raise ConfigError(flag, f"{path} {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(flag, f"{path} is not a regular file ({_kind(info.st_mode)})")
        if info.st_size > limit:
            raise ConfigError(flag, f"{path} is {info.st_size} bytes; a configuration file is at most {limit}")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = -1
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(flag, f"cannot read {path}: {exc.strerror}") from None
    finally:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    if len(data) > limit:
        raise ConfigError(flag, f"{path} grew past {limit} bytes while it was read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(flag, f"{path} is not UTF-8 text (invalid byte at offset {exc.start})") from None


def read_yaml_mapping(path: Path, flag: str) -> dict[Any, Any]:
    """The mapping a YAML file holds (an empty file is an empty mapping); anything else raises :class:`ConfigError`."""
    text = read_config_text(path, flag)
    import yaml  # only a daemon given a configuration file pays for the parser

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(flag, f"{path} is not valid YAML: {exc}") from None
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise ConfigError(flag, f"{path} must hold a mapping")
    return raw


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "not a plain file")
