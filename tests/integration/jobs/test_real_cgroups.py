"""The collector against the real kernel: a job cgroup with a process of known CPU, memory and block I/O use.

Tolerances (stated here, checked below): CPU time within +0.6 s of the 1.0 s the worker burns (interpreter start
and exit add a little); memory within +48 MiB of the 64 MiB the worker fills (the interpreter itself); block I/O
written within +1 MiB and read within +8 MiB of the 16 MiB moved with O_DIRECT (the interpreter may read its own
files from disk). Then the job ends and its series must be gone on the next cycle.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from tests.integration.jobs.conftest import SlurmLikeJob, disk_of, host_collector
from tests.unit.jobs.helpers import samples

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
WORKER = r"""
import mmap, os, sys, time
sys.stdin.readline()  # wait until the test has moved us into the job's cgroups
end = time.process_time() + 1.0
while time.process_time() < end:
    pass
fill = bytearray(b"\x01") * (64 * 1024 * 1024)
page = mmap.mmap(-1, 1024 * 1024)
page.write(b"\x02" * (1024 * 1024))
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
for _ in range(16):
    os.write(fd, page)
os.fsync(fd)
os.close(fd)
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
for _ in range(16):
    os.readv(fd, [page])
os.close(fd)
print("done", flush=True)
sys.stdin.readline()
"""


def _values(families: list[Metric], job_name: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for name in ("task_cpu_seconds_total", "task_mem_usage_byte", "task_block_in_byte", "task_block_out_byte"):
        for labels, value in samples(families, name).items():
            if ("job_name", job_name) in labels:
                found[name] = value
                found["username=" + dict(labels)["username"]] = 1
    return found


def test_cpu_memory_and_block_io_of_a_real_job_match_what_it_did(slurm_job: SlurmLikeJob) -> None:
    data_dir = Path("/var/tmp") / f"pai-jobs-it-{os.getpid()}"
    data_dir.mkdir(exist_ok=True)
    slurm_job.allow_block_accounting(disk_of(data_dir))
    job_name = f"pai-jobs-it-{os.getpid()}"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(data_dir / "io.bin")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={"PATH": "/usr/bin:/bin", "PAI_JOB_NAME": job_name, "PAI_TASK_INDEX": "3"},
    )  # fmt: skip
    with worker:
        _run_worker(worker, slurm_job, job_name, data_dir)
    assert _values(list(host_collector().collect()), job_name) == {}


def _run_worker(worker: subprocess.Popen[str], slurm_job: SlurmLikeJob, job_name: str, data_dir: Path) -> None:
    try:
        assert worker.stdin is not None
        assert worker.stdout is not None
        slurm_job.add(worker.pid)
        worker.stdin.write("go\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "done"
        collector = host_collector()
        found = _values(list(collector.collect()), job_name)
        assert found.get("username=root") == 1, found
        assert 1.0 <= found["task_cpu_seconds_total"] <= 1.6
        assert 64 * MIB <= found["task_mem_usage_byte"] <= 112 * MIB
        assert 16 * MIB <= found["task_block_out_byte"] <= 17 * MIB
        assert 16 * MIB <= found["task_block_in_byte"] <= 24 * MIB
    finally:
        worker.kill()
        worker.wait(timeout=30)
        (data_dir / "io.bin").unlink(missing_ok=True)
        data_dir.rmdir()


def test_the_slurm_job_id_names_a_job_without_pai_variables(slurm_job: SlurmLikeJob) -> None:
    with subprocess.Popen(["sleep", "600"], env={"PATH": "/usr/bin:/bin"}) as sleeper:
        _check_slurm_identity(sleeper, slurm_job)


def _check_slurm_identity(sleeper: subprocess.Popen[bytes], slurm_job: SlurmLikeJob) -> None:
    try:
        slurm_job.add(sleeper.pid)
        families = list(host_collector().collect())
        info = [dict(labels) for labels in samples(families, "task_info") if ("runtime", "slurm") in labels]
        mine = [labels for labels in info if labels["container_id"] == str(slurm_job.job_id)]
        assert len(mine) == 1, info
        assert mine[0]["job_name"] == str(slurm_job.job_id)
        assert mine[0]["username"] == "root"
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)
