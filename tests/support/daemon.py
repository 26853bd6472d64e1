"""Stopping a daemon a test started, the same way for every daemon: the exporters, Prometheus, Alertmanager and
node_exporter on loopback."""

from __future__ import annotations

import socket
import subprocess
import tempfile
from collections.abc import Sequence
from typing import IO

STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def terminate(process: subprocess.Popen[bytes] | None, timeout: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM, and SIGKILL when it has not exited within ``timeout``; its exit status (None: never started)."""
    if process is None:
        return None
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return process.returncode


def finish(process: subprocess.Popen[bytes], log: IO[bytes]) -> str:
    """Stop the process and return everything it logged, closing the log ("" when closed already)."""
    terminate(process)
    if log.closed:
        return ""
    log.seek(0)
    text = log.read().decode(errors="replace")
    log.close()
    return text


class LoopbackDaemon:
    """A program on a free loopback port with its output in a temporary file. ``start`` again after ``stop``
    restarts it (the output accumulates); ``close`` stops it and frees the file. Subclasses give ``argv``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> Sequence[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv(), stdout=self.log, stderr=self.log)

    def stop(self) -> None:
        terminate(self.process)

    def close(self) -> None:
        self.stop()
        self.log.close()
