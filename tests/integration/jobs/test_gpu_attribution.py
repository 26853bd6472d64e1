"""GPU attribution end to end: the real ``gpu`` collector on the simulated NVML library (a stand-in for GPUs we do
not have) publishes its state, and the ``jobs`` collector attributes the GPU processes of two real podman job
containers and one host process outside any job, on four GPUs whose minor numbers differ from their indices."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pai_monitoring.gpu.collector import GpuCollector, GpuOptions
from pai_monitoring.jobs.collector import JobsCollector, JobsOptions
from pai_monitoring.runtime.collector import CollectorContext
from pai_monitoring.shared_model import GPU_STATE
from tests.integration.jobs.conftest import PREFIX, container, podman
from tests.unit.jobs.helpers import samples

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
GIB = 1024**3


@pytest.fixture(scope="module")
def nvml_sim_lib() -> Path:
    spec = importlib.util.spec_from_file_location("nvml_sim_build_jobs", REPO / "sim" / "nvml" / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built: Path = module.build()
    return built


def _pid(name: str) -> int:
    result = podman("inspect", "-f", "{{.State.Pid}}", name)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


@pytest.fixture
def outsider() -> Iterator[int]:
    with subprocess.Popen(["sleep", "600"]) as process:
        try:
            yield process.pid
        finally:
            process.kill()
            process.wait(timeout=30)


def test_two_jobs_and_an_external_process_on_four_gpus(
    busybox_image: str, nvml_sim_lib: Path, outsider: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_a = ("-e", "PAI_JOB_NAME=gpu-job-a", "-e", "PAI_USER_NAME=ann", "-e", "NVIDIA_VISIBLE_DEVICES=0,1")
    env_b = ("-e", "PAI_JOB_NAME=gpu-job-b", "-e", "PAI_USER_NAME=ben")  # no variable: found by its process
    with container(f"{PREFIX}-gpu-a", busybox_image, *env_a), container(f"{PREFIX}-gpu-b", busybox_image, *env_b):
        pid_a, pid_b = _pid(f"{PREFIX}-gpu-a"), _pid(f"{PREFIX}-gpu-b")
        lines = ["gpu_count = 4"]
        for index in range(4):
            lines += [
                f"gpu.{index}.minor = {3 - index}",  # minor numbers need not follow indices (#3951)
                f"gpu.{index}.utilization.gpu = {10 * (index + 1)}",
                f"gpu.{index}.memory.total = {16 * GIB}",
                f"gpu.{index}.memory.used = {GIB}",
            ]
        lines += [f"gpu.0.process.0 = {pid_a} {GIB}", f"gpu.2.process.0 = {pid_b} {2 * GIB}",
                  f"gpu.3.process.0 = {outsider} {GIB // 2}"]  # fmt: skip
        scenario = tmp_path / "scenario.conf"
        scenario.write_text("\n".join(lines) + "\n")
        monkeypatch.setenv(
            "LD_LIBRARY_PATH", os.pathsep.join([str(nvml_sim_lib), os.environ.get("LD_LIBRARY_PATH", "")])
        )
        monkeypatch.setenv("PAI_NVML_SIM_SCENARIO", str(scenario))

        context = CollectorContext(node_name="gpu-it")
        gpu = GpuCollector(GpuOptions(timeout=10.0), context)
        try:
            list(gpu.collect())
        finally:
            gpu.close()
        assert context.shared.latest(GPU_STATE, max_age=60) is not None
        jobs = JobsCollector(JobsOptions(docker_socket="", containerd_socket=""), context)
        families = list(jobs.collect())

    percent = {
        (dict(labels)["job_name"], dict(labels)["minor_number"]): value
        for labels, value in samples(families, "task_gpu_percent").items()
        if dict(labels)["job_name"].startswith("gpu-job-")
    }
    # job a: indices 0 and 1 from NVIDIA_VISIBLE_DEVICES are minors 3 and 2; job b: its process on index 2, minor 1
    assert percent == {("gpu-job-a", "3"): 10.0, ("gpu-job-a", "2"): 20.0, ("gpu-job-b", "1"): 30.0}
    memory = {
        (dict(labels)["job_name"], dict(labels)["minor_number"]): value
        for labels, value in samples(families, "task_gpu_memory_bytes").items()
        if dict(labels)["job_name"].startswith("gpu-job-")
    }
    assert memory == {("gpu-job-a", "3"): GIB, ("gpu-job-a", "2"): 0, ("gpu-job-b", "1"): 2 * GIB}
    assert samples(families, "gpu_used_by_external_process_count") == {
        (("minor_number", "0"), ("pid", str(outsider))): 1.0
    }
    assert samples(families, "gpu_used_by_zombie_container_count") == {}
