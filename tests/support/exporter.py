"""Starting a real exporter process for a test, and waiting for it; optionally under its unit's limits."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
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

from tests.support.daemon import finish
from tests.support.daemon import free_port as free_port  # the tests import it from here

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0  # a liveness bound: Python starts slowly on a busy machine
CGROUP = Path("/sys/fs/cgroup")
_UNITS = {
    "job_exporter": ("pai-job-exporter.service.j2", "job_exporter_memory_max"),
    "watchdog": ("pai-watchdog.service.j2", "watchdog_memory_max"),
}
_SIZE = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


@dataclass(frozen=True)
class UnitLimits:
    """The ``TasksMax``, ``MemoryMax`` and ``LimitNOFILE`` a role's unit gives its daemon."""

    tasks_max: int
    memory_max_bytes: int
    nofile: int

    @classmethod
    def of_role(cls, role: str) -> UnitLimits:
        """Read from the role itself, so a test runs under whatever the shipped unit sets."""
        template, memory_var = _UNITS[role]
        unit = (REPO / "roles" / role / "templates" / template).read_text(encoding="utf-8")
        defaults = (REPO / "roles" / role / "defaults" / "main.yml").read_text(encoding="utf-8")
        tasks = re.search(r"^TasksMax=(\d+)$", unit, re.MULTILINE)
        nofile = re.search(r"^LimitNOFILE=(\d+)$", unit, re.MULTILINE)
        memory = re.search(rf"^{memory_var}: (\d+)([KMG])$", defaults, re.MULTILINE)
        if not (tasks and nofile and memory and f"MemoryMax={{{{ {memory_var} }}}}" in unit):
            raise AssertionError(f"cannot read TasksMax, LimitNOFILE and MemoryMax of the {role} unit")
        return cls(int(tasks[1]), int(memory[1]) * _SIZE[memory[2]], int(nofile[1]))


class LimitedCgroup:
    """A cgroup with the unit's ``pids.max`` and memory limit, for a daemon started by a test (needs root).

    systemd is not PID 1 here, so ``systemd-run -p TasksMax=... -p MemoryMax=...`` is not available; this sets the
    same kernel limits by hand. On a cgroup v1 (or hybrid) host: a child of this process's own ``memory`` cgroup
    with ``memory.limit_in_bytes`` and a child of its ``pids`` cgroup with ``pids.max``, which is what systemd
    writes for ``MemoryMax=``/``TasksMax=`` there; on a v2 host one cgroup with ``memory.max`` and ``pids.max``.
    """

    def __init__(self, name: str, limits: UnitLimits) -> None:
        if os.geteuid() != 0:
            raise AssertionError("running a daemon under its unit's limits needs root (cgroups)")
        self.limits = limits
        self.v2 = (CGROUP / "cgroup.controllers").exists()
        own = {}
        for line in Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                own[controller] = path.lstrip("/")
        if self.v2:
            self.memory = self.pids = CGROUP / name
            self.memory.mkdir()
            with contextlib.suppress(OSError):
                (CGROUP / "cgroup.subtree_control").write_text("+memory +pids")
            (self.memory / "memory.max").write_text(str(limits.memory_max_bytes))
            (self.memory / "memory.swap.max").write_text("0")
        else:
            self.memory = CGROUP / "memory" / own.get("memory", "") / name
            self.pids = CGROUP / "pids" / own.get("pids", "") / name
            self.memory.mkdir()
            self.pids.mkdir()
            (self.memory / "memory.limit_in_bytes").write_text(str(limits.memory_max_bytes))
        (self.pids / "pids.max").write_text(str(limits.tasks_max))

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """A command line that joins the cgroup(s), takes the unit's open-file limit and execs ``argv``."""
        join = " && ".join(f"echo $$ > {directory}/cgroup.procs" for directory in {self.memory, self.pids})
        script = f'{join} && ulimit -n {self.limits.nofile} && exec "$@"'
        return ["/bin/sh", "-c", script, "sh", *argv]

    def memory_bytes(self) -> int:
        name = "memory.current" if self.v2 else "memory.usage_in_bytes"
        return int((self.memory / name).read_text())

    def peak_memory_bytes(self) -> int:
        """The peak since :meth:`reset_peak` (v1), or since the cgroup was made (v2 kernels without a reset)."""
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        path = self.memory / name
        return int(path.read_text()) if path.exists() else self.memory_bytes()

    def reset_peak(self) -> None:
        path = self.memory / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes")
        with contextlib.suppress(OSError):
            path.write_text("0")

    def oom_kills(self) -> int:
        """Processes the kernel killed in this cgroup for memory."""
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in (self.memory / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def failed_forks(self) -> int:
        """Thread or process creations refused by ``pids.max``."""
        for line in (self.pids / "pids.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value)
        return 0

    def remove(self) -> None:
        for directory in {self.memory, self.pids}:
            for _ in range(100):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # processes still leaving
                    time.sleep(0.05)


def self_signed_certificate(directory: Path, passphrase: str | None = None) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1 made by the openssl command; the key encrypted when a passphrase is given."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make a test certificate: apt-get install openssl"
    cert, key = directory / "cert.pem", directory / "key.pem"
    protect = ["-passout", f"pass:{passphrase}"] if passphrase else ["-nodes"]
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", *protect,
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@dataclass
class Exporter:
    process: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]
    scheme: str = "http"
    output: str = ""
    cgroup: LimitedCgroup | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> int:
        self.output = finish(self.process, self.log) or self.output
        if self.cgroup is not None:
            self.cgroup.remove()
        return self.process.returncode

    def read_output(self) -> str:
        """What the process has logged so far."""
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        self.log.seek(0, os.SEEK_END)
        return text


def daemon_env() -> dict[str, str]:
    """The environment of a daemon started by a test: the repository importable, and whatever PYTHONPATH says
    first (so the same tests can run against another checkout of the package)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))}


def start_exporter(
    args: Sequence[str],
    *,
    port: int | None = None,
    wait_path: str = "/healthz",
    limits: UnitLimits | None = None,
    command: Sequence[str] = ("-m", "tests.support.run_exporter"),
) -> Exporter:
    """Start the exporter (with the test collectors available) on 127.0.0.1 and wait until it listens.

    With ``limits`` it runs in a cgroup of its own with the unit's task and memory limits.
    """
    port = port or free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Exporter.stop
    argv = [sys.executable, *command, f"--web.listen-address=127.0.0.1:{port}", *args]
    cgroup = LimitedCgroup(f"pai-it-{os.getpid()}-{port}", limits) if limits is not None else None
    process = subprocess.Popen(
        cgroup.wrap(argv) if cgroup is not None else argv, cwd=REPO, env=daemon_env(), stdout=log, stderr=log
    )
    exporter = Exporter(process, port, log, cgroup=cgroup)
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
