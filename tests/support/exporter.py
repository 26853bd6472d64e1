"""Starting a real exporter process for a test, and waiting for it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0  # a liveness bound: Python starts slowly on a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Exporter:
    process: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]
    scheme: str = "http"
    output: str = ""

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if not self.log.closed:
            self.log.seek(0)
            self.output = self.log.read().decode(errors="replace")
            self.log.close()
        return self.process.returncode


def start_exporter(args: Sequence[str], *, port: int | None = None, wait_path: str = "/healthz") -> Exporter:
    """Start the exporter (with the test collectors available) on 127.0.0.1 and wait until it answers."""
    port = port or free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Exporter.stop
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.run_exporter", f"--web.listen-address=127.0.0.1:{port}", *args],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
    )
    exporter = Exporter(process, port, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            exporter.stop()
            raise RuntimeError(f"exporter exited {process.returncode}: {exporter.output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return exporter
        except OSError:
            time.sleep(0.05)
    exporter.stop()
    raise RuntimeError(f"exporter did not listen on {port} within {START_TIMEOUT}s")


def get(url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(predicate: object, timeout: float = 60.0, interval: float = 0.1) -> None:
    """Poll ``predicate()`` until true; a liveness bound, not a performance assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
