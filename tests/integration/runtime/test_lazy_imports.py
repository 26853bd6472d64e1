"""What the job-exporter's processes load, read from the real processes: what they do not load costs no memory.

The exporter's memory goal (``bench/bench_exporter.py``: PSS at most 1.5 x node_exporter's) leaves no room for
modules a configuration does not use. Python's own import log (``PYTHONPROFILEIMPORTTIME``, one line per module a
process imports, on stderr) shows what the running exporter and its GPU worker actually imported.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pai_monitoring.gpu.supervisor import WorkerSupervisor
from tests.support.exporter import daemon_env, get, start_exporter, wait_for

pytestmark = pytest.mark.integration

_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$", re.MULTILINE)

WORKER_NEVER = {"prometheus_client", "dataclasses", "asyncio", "logging", "yaml", "ssl", "email", "argparse"}
"""Modules the exporter's main process uses and its GPU worker must not load: the worker needs pynvml and the
``gpu`` modules it runs, nothing else (each of these costs the second process memory, ``dataclasses`` with
``inspect`` about 1.2 MB)."""


def imported(log: str) -> set[str]:
    return set(_IMPORTED.findall(log))


def test_a_default_exporter_and_its_gpu_worker_never_load_the_yaml_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # inherited by the worker
    exporter = start_exporter([], command=("-m", "pai_monitoring.cli"))
    try:
        # the GPU collector has run once (its worker answered, with or without a GPU) and a scrape was served
        wait_for(lambda: "pai_monitoring.gpu.nvml_reader" in imported(exporter.read_output()))
        wait_for(lambda: 'collector="gpu"' in get(f"{exporter.url}/metrics")[1])
        log = exporter.read_output()
    finally:
        exporter.stop()
    modules = imported(log)
    assert {"pai_monitoring.runtime.http", "pynvml"} <= modules  # both processes' imports are in the log
    assert "yaml" not in modules


def test_a_configuration_file_loads_the_yaml_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The counterpart: the import log does show yaml when a configuration file needs it."""
    config = tmp_path / "config.yml"
    config.write_text("collectors: {}\n")
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    exporter = start_exporter([f"--config.file={config}"], command=("-m", "pai_monitoring.cli"))
    try:
        log = exporter.read_output()
    finally:
        exporter.stop()
    assert "yaml" in imported(log)


def test_the_gpu_worker_loads_only_what_it_runs(capfd: pytest.CaptureFixture[str]) -> None:
    supervisor = WorkerSupervisor(env={**daemon_env(), "PYTHONPROFILEIMPORTTIME": "1"})
    try:
        snapshot = supervisor.request(20.0)  # the worker's stderr is this process's, captured by capfd
    finally:
        supervisor.close()
    assert snapshot.worker_pid not in (None, os.getpid())
    modules = imported(capfd.readouterr().err)
    # the worker runs as ``python -m pai_monitoring.gpu.worker`` (as __main__, so not itself in the log)
    assert {"pai_monitoring.gpu", "pai_monitoring.gpu.nvml_reader", "pynvml"} <= modules
    assert modules & WORKER_NEVER == set()
