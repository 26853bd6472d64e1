"""Real processes in real cgroups that outlive or hang their job, with GPUs from the simulated NVML (a stand-in for
GPUs we do not have, loaded by the real ``pynvml``):

* a Slurm-like job whose step daemon ends while its task keeps a GPU is an ended job holding that GPU;
* a job's process that stays in D state (a ``vfork`` parent waiting for its child, which is in D for as long as the
  child lives) is counted, and once it has not run for the stuck threshold it is reported with its job and GPU.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pai_monitoring.jobs.collector import JobsCollector, JobsOptions
from pai_monitoring.node_health import NodeHealthCollector, NodeHealthOptions
from pai_monitoring.runtime.collector import CollectorContext
from tests.integration.jobs.conftest import SlurmLikeJob, simulated_gpus
from tests.unit.jobs.helpers import FakeClock, samples

pytestmark = pytest.mark.integration

GIB = 1024**3
VFORK_PARENT = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) {
    /* the parent waits in the kernel (state D) until the child execs or exits; the child waits for stdin */
    pid_t child = vfork();
    if (child == 0) {
        char c;
        (void)read(0, &c, 1);
        _exit(0);
    }
    return 0;
}
"""


def _jobs_collector(context: CollectorContext) -> JobsCollector:
    return JobsCollector(JobsOptions(docker_socket="", containerd_socket="", podman_graph_root=""), context)


@pytest.fixture
def fake_stepd(tmp_path: Path) -> Path:
    """A program whose command name is ``slurmstepd``: a copy of ``sleep``."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    stepd = tmp_path / "slurmstepd"
    shutil.copy2(sleep, stepd)
    return stepd


def test_a_slurm_job_whose_stepd_ends_while_its_task_keeps_a_gpu_is_an_ended_job_on_that_gpu(
    slurm_job: SlurmLikeJob, fake_stepd: Path, nvml_sim_lib: Path, tmp_path: Path
) -> None:
    job_id = str(slurm_job.job_id)
    with (
        subprocess.Popen([fake_stepd, "600"]) as stepd,
        subprocess.Popen(["sleep", "600"], env={"PATH": "/usr/bin:/bin"}) as task,
    ):
        try:
            slurm_job.add_stepd(stepd.pid)
            slurm_job.add(task.pid)
            context = CollectorContext(node_name="slurm-it")
            simulated_gpus(nvml_sim_lib, f"gpu_count = 2\ngpu.1.process.0 = {task.pid} {GIB}\n", tmp_path, context)
            jobs = _jobs_collector(context)
            running = list(jobs.collect())
            held = {dict(k)["minor_number"]: v for k, v in samples(running, "task_gpu_memory_bytes").items()
                    if ("job_name", job_id) in k}  # fmt: skip
            assert held == {"1": GIB}
            assert samples(running, "gpu_used_by_external_process_count") == {}
            assert [dict(k) for k in samples(running, "zombie_container_count") if ("container_id", job_id) in k] == []

            stepd.kill()
            stepd.wait(timeout=30)
            ended = list(jobs.collect())
            (zombie,) = [dict(k) for k in samples(ended, "gpu_used_by_zombie_container_count")
                         if ("container_id", job_id) in k]  # fmt: skip
            assert (zombie["minor_number"], zombie["index"], zombie["runtime"]) == ("1", "1", "slurm")
            assert (zombie["job_name"], zombie["username"], zombie["node_name"]) == (job_id, "root", "slurm-it")
            assert [k for k in samples(ended, "zombie_container_count") if ("container_id", job_id) in k]
        finally:
            for process in (stepd, task):
                process.kill()


@pytest.fixture
def vfork_parent(tmp_path: Path) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the D-state test program (Debian package gcc)")
    source = tmp_path / "vfork_parent.c"
    source.write_text(VFORK_PARENT)
    binary = tmp_path / "vfork-parent"
    subprocess.run(["gcc", "-O1", "-o", str(binary), str(source)], check=True, timeout=120)
    return binary


def _wait_for_d_state(pid: int) -> None:
    stat = Path(f"/proc/{pid}/stat")
    for _ in range(200):
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "D":
            return
        time.sleep(0.05)  # polling for the state change, not sequencing by time
    pytest.fail(f"process {pid} never entered D state")


def test_a_job_process_stuck_in_d_state_is_counted_and_reported_with_its_job_and_gpu(
    slurm_job: SlurmLikeJob, vfork_parent: Path, nvml_sim_lib: Path, tmp_path: Path
) -> None:
    with subprocess.Popen([vfork_parent], stdin=subprocess.PIPE) as parent:
        try:
            slurm_job.add(parent.pid)
            _wait_for_d_state(parent.pid)
            context = CollectorContext(node_name="stuck-it")
            simulated_gpus(nvml_sim_lib, f"gpu_count = 1\ngpu.0.process.0 = {parent.pid} {GIB}\n", tmp_path, context)
            list(_jobs_collector(context).collect())  # publishes the index of job cgroups
            clock = FakeClock()
            health = NodeHealthCollector(NodeHealthOptions(stuck_seconds=60), context, clock=clock)
            first = list(health.collect())
            assert sum(samples(first, "zombie_process_count").values()) >= 1
            assert [k for k in samples(first, "pai_processes_stuck") if ("command", "vfork-parent") in k] == []
            clock.now += 61  # the real process has not run since: its context switch count is unchanged
            (stuck,) = [dict(k) for k in samples(list(health.collect()), "pai_processes_stuck")
                        if ("command", "vfork-parent") in k]  # fmt: skip
            assert (stuck["job_name"], stuck["container_id"], stuck["node_name"]) == (
                str(slurm_job.job_id),
                str(slurm_job.job_id),
                "stuck-it",
            )
            assert (stuck["minor_number"], stuck["index"]) == ("0", "0")
            assert stuck["uuid"].startswith("GPU-")
        finally:
            assert parent.stdin is not None
            parent.stdin.close()  # the child reads end-of-file and exits; the parent leaves D state and ends
            parent.wait(timeout=30)
