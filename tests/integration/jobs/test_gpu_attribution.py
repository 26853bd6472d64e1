"""GPU attribution end to end: the real ``gpu`` collector on the simulated NVML library (a stand-in for GPUs we do
not have, loaded by the real ``pynvml``) publishes its state, and the ``jobs`` collector attributes the GPU
processes, on four GPUs whose minor numbers differ from their indices:

* of two real podman job containers and one host process outside any job;
* of the jobs in every Kubernetes and Slurm fixture layout (``tests/fixtures/jobs/generate.py``): each in-job
  process counts for its job, only the process outside any job is external, and the process left in a job
  that has ended is a zombie's.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pai_monitoring.jobs.collector import JobsCollector, JobsOptions
from pai_monitoring.runtime.collector import CollectorContext
from pai_monitoring.shared_model import GPU_STATE, GpuState
from tests.fixtures.jobs.generate import KUBERNETES, SLURM, Owners
from tests.integration.jobs.conftest import PREFIX, container, podman, simulated_gpus
from tests.unit.jobs.helpers import make_tree, samples, tree_context, tree_options

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
GIB = 1024**3


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
    busybox_image: str, nvml_sim_lib: Path, outsider: int, tmp_path: Path
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
        context = CollectorContext(node_name="gpu-it")
        simulated_gpus(nvml_sim_lib, "\n".join(lines) + "\n", tmp_path, context)
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
    external = [dict(labels) for labels in samples(families, "gpu_used_by_external_process_count")]
    assert [(e["pid"], e["minor_number"], e["index"], e["node_name"]) for e in external] == [
        (str(outsider), "0", "3", "gpu-it")
    ]
    assert samples(families, "gpu_used_by_zombie_container_count") == {}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Owners]]:
    root = tmp_path_factory.mktemp("gpu-layouts")
    return {name: make_tree(name, root) for name in KUBERNETES + SLURM}


def _scenario(trees: dict[str, tuple[Path, Owners]]) -> str:
    """One simulated machine holding every layout's GPU processes (their pids differ between layouts; a layout's
    collector finds the others' pids gone, as processes that have exited)."""
    lines = ["gpu_count = 4"]
    processes: dict[int, list[str]] = {}
    for tree, _ in trees.values():
        state = json.loads((tree / "gpu_state.json").read_text())
        for device in state["devices"]:
            index = device["index"]
            lines += [
                f"gpu.{index}.minor = {device['minor_number']}",
                f"gpu.{index}.uuid = {device['uuid']}",
                f"gpu.{index}.utilization.gpu = {int(device['utilization_gpu_percent'])}",
                f"gpu.{index}.memory.total = {device['memory_total_bytes']}",
                f"gpu.{index}.memory.used = {device['memory_used_bytes']}",
            ]
        index_of = {d["minor_number"]: d["index"] for d in state["devices"]}
        for p in state["processes"]:
            processes.setdefault(index_of[p["minor_number"]], []).append(f"{p['pid']} {p['used_memory_bytes']}")
    for index, rows in processes.items():
        lines += [f"gpu.{index}.process.{n} = {row}" for n, row in enumerate(rows)]
    return "\n".join(dict.fromkeys(lines)) + "\n"  # the device lines repeat per layout: once is enough


@pytest.fixture(scope="module")
def nvml_state(
    layouts: dict[str, tuple[Path, Owners]], nvml_sim_lib: Path, tmp_path_factory: pytest.TempPathFactory
) -> GpuState:
    return simulated_gpus(nvml_sim_lib, _scenario(layouts), tmp_path_factory.mktemp("nvml"))


@pytest.mark.parametrize("layout", KUBERNETES + SLURM)
def test_gpu_processes_are_attributed_on_every_layout(
    layout: str, layouts: dict[str, tuple[Path, Owners]], nvml_state: GpuState
) -> None:
    tree, owners = layouts[layout]
    context = tree_context(tree)
    context.shared.publish(GPU_STATE, nvml_state)
    families = list(JobsCollector(tree_options(tree), context).collect())
    minor_of: dict[int, list[tuple[str, int]]] = {}
    for p in nvml_state.processes:
        minor_of.setdefault(p.pid, []).append((p.minor_number, p.used_memory_bytes or 0))
    expected: dict[tuple[str, str], int] = {}
    for pid, owner in owners.items():
        if owner is not None and not owner.startswith("zombie:"):
            for minor, memory in minor_of[pid]:
                expected[(owner, minor)] = expected.get((owner, minor), 0) + memory
    held = {
        (dict(labels)["job_name"], dict(labels)["minor_number"]): value
        for labels, value in samples(families, "task_gpu_memory_bytes").items()
        if value > 0
    }
    jobs = {job for job, _ in expected}  # a zombie container may carry a job name of its own (CRI-O still knows it)
    assert {k: v for k, v in held.items() if k[0] in jobs} == expected
    external = {int(dict(labels)["pid"]) for labels in samples(families, "gpu_used_by_external_process_count")}
    assert external == {pid for pid, owner in owners.items() if owner is None}
    zombies = {dict(labels)["container_id"] for labels in samples(families, "gpu_used_by_zombie_container_count")}
    assert zombies == {o.removeprefix("zombie:") for o in owners.values() if o and o.startswith("zombie:")}
