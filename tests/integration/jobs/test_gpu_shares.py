"""Two real podman jobs share one GPU of the simulated NVML library (a stand-in for GPUs): the real ``gpu`` collector
reads each process's utilisation, and the ``jobs`` collector gives each job its own figure and its share of the
GPU's energy."""

from __future__ import annotations

from pathlib import Path

import pytest

from pai_monitoring.jobs.collector import JobsCollector, JobsOptions
from pai_monitoring.runtime.collector import CollectorContext
from tests.integration.jobs.conftest import PREFIX, container, podman, simulated_gpus
from tests.unit.jobs.helpers import samples

pytestmark = pytest.mark.integration

GIB = 1 << 30


def _pid(name: str) -> int:
    result = podman("inspect", "-f", "{{.State.Pid}}", name)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def by_job(families: list[object], name: str) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["job_name"], dict(labels)["minor_number"]): value
        for labels, value in samples(families, name).items()  # type: ignore[arg-type]
        if dict(labels)["job_name"].startswith("share-job-")
    }


def test_two_jobs_on_one_gpu_each_get_their_own_use_and_energy(
    busybox_image: str, nvml_sim_lib: Path, tmp_path: Path
) -> None:
    env_a = ("-e", "PAI_JOB_NAME=share-job-a", "-e", "PAI_USER_NAME=ann")
    env_b = ("-e", "PAI_JOB_NAME=share-job-b", "-e", "PAI_USER_NAME=ben", "-e", "NVIDIA_VISIBLE_DEVICES=0,1")
    with container(f"{PREFIX}-share-a", busybox_image, *env_a), container(f"{PREFIX}-share-b", busybox_image, *env_b):
        pid_a, pid_b = _pid(f"{PREFIX}-share-a"), _pid(f"{PREFIX}-share-b")

        def scenario(energy_mj: int) -> str:
            return (
                "gpu_count = 2\n"
                "gpu.0.utilization.gpu = 80\n"
                f"gpu.0.energy = {energy_mj}\ngpu.1.energy = {3 * energy_mj}\n"
                f"gpu.0.process.0 = {pid_a} {GIB}\ngpu.0.process.1 = {pid_b} {GIB}\n"
                f"gpu.0.process_util.0 = {pid_a} 60 30\ngpu.0.process_util.1 = {pid_b} 20 5\n"
            )

        context = CollectorContext(node_name="gpu-it")
        jobs = JobsCollector(JobsOptions(docker_socket="", containerd_socket=""), context)
        simulated_gpus(nvml_sim_lib, scenario(1_000_000), tmp_path, context)
        first = list(jobs.collect())
        simulated_gpus(nvml_sim_lib, scenario(1_800_000), tmp_path, context)
        second = list(jobs.collect())

    # The card's utilisation is the same for both (the original's task_gpu_percent); their own figures differ.
    assert by_job(second, "task_gpu_percent") == {
        ("share-job-a", "0"): 80.0,
        ("share-job-b", "0"): 80.0,
        ("share-job-b", "1"): 0.0,
    }
    assert by_job(second, "task_gpu_sm_utilization_ratio") == {
        ("share-job-a", "0"): 0.6,
        ("share-job-b", "0"): 0.2,
        ("share-job-b", "1"): 0.0,  # held (NVIDIA_VISIBLE_DEVICES), nothing of it runs there
    }
    assert by_job(second, "task_gpu_memory_utilization_ratio")[("share-job-a", "0")] == 0.3
    # Energy: nothing before an interval; then GPU 0's 800 J split 3:1 by use, GPU 1's 2400 J all to job b.
    assert by_job(first, "task_gpu_energy_joules_total") == {
        ("share-job-a", "0"): 0.0,
        ("share-job-b", "0"): 0.0,
        ("share-job-b", "1"): 0.0,
    }
    assert by_job(second, "task_gpu_energy_joules_total") == {
        ("share-job-a", "0"): pytest.approx(600.0),
        ("share-job-b", "0"): pytest.approx(200.0),
        ("share-job-b", "1"): pytest.approx(2400.0),
    }
