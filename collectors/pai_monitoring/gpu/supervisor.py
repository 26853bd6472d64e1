"""The exporter side of the NVML worker: start it, ask it for snapshots with a deadline, kill it when it hangs.

At most one worker is alive at any time. A worker that misses its deadline is killed with SIGKILL and reaped (waiting
at most half a second); the next request starts a fresh one. A worker that does not die (stuck in an uninterruptible
driver call) is remembered, and no new worker starts until it has gone. In steady state no process is spawned per
request.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pai_monitoring
from pai_monitoring.gpu.model import Snapshot
from pai_monitoring.gpu.protocol import FrameTimeout, PeerClosed, encode, read_frame_by

log = logging.getLogger(__name__)

REAP_TIMEOUT_SECONDS = 0.5
EXIT_TIMEOUT_SECONDS = 1.0


class WorkerFailed(RuntimeError):
    """The worker did not answer: it hung past its deadline (and was killed) or it died."""

    def __init__(self, message: str, *, hung: bool) -> None:
        super().__init__(message)
        self.hung = hung
        """True when NVML did not answer in time (or a killed worker is still stuck in the driver)."""


WORKER_MODULE = "pai_monitoring.gpu.worker"


def _pynvml_directory() -> str:
    """Where pynvml is installed (found without importing it), or ``""`` when it is not."""
    spec = importlib.util.find_spec("pynvml")
    if spec is None or spec.origin is None:
        return ""
    return str(Path(spec.origin).resolve().parent)


def default_command() -> list[str]:
    """``python -S -P -m pai_monitoring.gpu.worker``: what ``ps`` and ``systemctl status`` show as the worker.

    ``-S`` (no ``site``) saves about 2.7 MB in a virtualenv: the package and pynvml are found through PYTHONPATH
    instead (:func:`_child_environment`); ``-P`` keeps the working directory off the path. The package's
    ``__init__`` imports nothing, so the worker loads only the ``gpu`` modules it uses and pynvml."""
    return [sys.executable, "-S", "-P", "-m", WORKER_MODULE]


def _child_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The exporter's environment, with this package and pynvml importable in the child however the parent found
    them (the child runs without ``site``, so without the virtualenv's site-packages)."""
    env = dict(base)
    package_root = str(Path(pai_monitoring.__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    wanted = [p for p in dict.fromkeys([package_root, _pynvml_directory()]) if p and p not in paths]
    env["PYTHONPATH"] = os.pathsep.join([*wanted, *paths])
    return env


class WorkerSupervisor:
    """Owns the (single) NVML worker process.

    A worker stuck in an uninterruptible driver call (process state D) does not die at once from SIGKILL. Such a
    worker is kept as "dying" and no new worker is started until it is gone: a hung driver would hang every new
    worker too, and starting one per iteration would pile them up.
    """

    def __init__(
        self,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        kill_signal: int = signal.SIGKILL,
    ) -> None:
        self._command = list(command) if command is not None else default_command()
        self._env = env
        self._kill_signal = kill_signal
        self._process: subprocess.Popen[bytes] | None = None
        self._dying: subprocess.Popen[bytes] | None = None
        self.generation = 0
        """Increases by one each time a worker is started; snapshots of one generation share their Xid counts."""
        self.restarts = 0
        """Workers killed past their deadline or found dead."""
        self.spawned = 0
        """Workers started."""
        self.requests = 0
        """Snapshots asked for."""
        self.timeouts = 0
        """Requests NVML did not answer in time: the worker missed its deadline or an earlier one was still stuck."""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def dying_pid(self) -> int | None:
        """The killed worker that has not died yet, if any."""
        return self._dying.pid if self._dying is not None else None

    def _start(self) -> subprocess.Popen[bytes]:
        env = _child_environment(self._env if self._env is not None else os.environ)
        process = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True
        )
        self._process = process
        self.generation += 1
        self.spawned += 1
        log.debug("started NVML worker pid %d", process.pid)
        return process

    def _discard(self, reason: str) -> None:
        """Kill and reap the current worker; one that does not die yet is kept as dying."""
        process, self._process = self._process, None
        if process is None:
            return
        self.restarts += 1
        log.warning("NVML worker pid %d %s; killing it, a new one starts on the next collection", process.pid, reason)
        if not _kill_and_reap(process, self._kill_signal, REAP_TIMEOUT_SECONDS):
            log.warning(
                "NVML worker pid %d is stuck in the driver and not dead yet; no new worker until it is", process.pid
            )
            self._dying = process

    def _dying_is_gone(self) -> bool:
        if self._dying is None:
            return True
        if self._dying.poll() is None:
            return False
        _close_pipes(self._dying)
        log.info("stuck NVML worker pid %d has finally exited", self._dying.pid)
        self._dying = None
        return True

    def request(self, timeout: float) -> Snapshot:
        """One snapshot from the worker, or :class:`WorkerFailed` within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self.requests += 1
        if not self._dying_is_gone():
            assert self._dying is not None
            self.timeouts += 1
            message = f"the previous NVML worker (pid {self._dying.pid}) is still stuck in the driver"
            raise WorkerFailed(message, hung=True)
        process = self._process
        if process is not None and process.poll() is not None:
            self._discard(f"exited with status {process.returncode}")
            process = None
        if process is None:
            process = self._start()
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            process.stdin.write(encode("collect"))
            process.stdin.flush()
            answer = read_frame_by(process.stdout.fileno(), deadline)
        except FrameTimeout:
            self.timeouts += 1
            self._discard(f"did not answer within {timeout:.1f} s")
            raise WorkerFailed(f"NVML did not answer within {timeout:.1f} s", hung=True) from None
        except (PeerClosed, BrokenPipeError, OSError) as exc:
            self._discard(f"failed ({exc})")
            raise WorkerFailed(f"NVML worker failed: {exc}", hung=False) from None
        if not isinstance(answer, Snapshot):
            self._discard("sent an unexpected answer")
            raise WorkerFailed(f"unexpected answer from the NVML worker: {type(answer).__name__}", hung=False)
        return answer

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                assert process.stdin is not None
                process.stdin.write(encode("exit"))
                process.stdin.close()
                process.wait(timeout=EXIT_TIMEOUT_SECONDS)
            _kill_and_reap(process, self._kill_signal, REAP_TIMEOUT_SECONDS)
        if self._dying is not None:
            _kill_and_reap(self._dying, self._kill_signal, 0.0)


def _kill_and_reap(process: subprocess.Popen[bytes], kill_signal: int, wait: float) -> bool:
    """Signal the process and wait up to ``wait`` seconds for it; True when it is gone (reaped)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(kill_signal)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return False
    _close_pipes(process)
    return True


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
