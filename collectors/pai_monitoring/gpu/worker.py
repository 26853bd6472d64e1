"""The NVML worker process: ``python -m pai_monitoring.gpu.worker``.

It reads requests from stdin and answers each with one pickled :class:`~pai_monitoring.gpu.model.Snapshot` on the
stdout it was started with. Its own stdout is redirected to stderr first, so that nothing the library prints can
corrupt the answers. It exits at end of input, on an ``"exit"`` request, or when its parent goes away (a watchdog
thread checks the parent PID, which keeps working while the main thread is stuck inside the driver).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import BinaryIO

from pai_monitoring.gpu.model import Snapshot
from pai_monitoring.gpu.protocol import read_frame, write_frame
from pai_monitoring.gpu.worker_log import log
from pai_monitoring.runtime.heap import release_freed_heap

PARENT_CHECK_SECONDS = 1.0


def _exit_when_orphaned(parent: int) -> None:
    stop = threading.Event()
    while not stop.wait(PARENT_CHECK_SECONDS):
        if os.getppid() != parent:
            os._exit(0)


def serve(requests: BinaryIO, answers: BinaryIO) -> int:
    # Imported here so that a broken NVML binding is reported as a snapshot, not as an import crash.
    try:
        from pai_monitoring.gpu.nvml_reader import NvmlSession
    except ImportError as exc:
        log.error("cannot import the NVML binding: %s", exc)
        session = None
        failure = Snapshot(status="library_not_found", detail=f"pynvml: {exc}", worker_pid=os.getpid())
    else:
        session = NvmlSession()
    first = True
    try:
        while True:
            request = read_frame(requests)
            if request is None or request == "exit":
                return 0
            if session is None:
                write_frame(answers, failure)
                continue
            snapshot = session.snapshot()
            write_frame(answers, _with_pid(snapshot))
            if first:  # start-up is over, the first snapshot's temporaries freed too
                release_freed_heap()
                first = False
    finally:
        if session is not None:
            session.close()


def _with_pid(snapshot: Snapshot) -> Snapshot:
    return snapshot._replace(worker_pid=os.getpid())


def main() -> int:
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), name="orphan-check", daemon=True).start()
    return serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    sys.exit(main())
