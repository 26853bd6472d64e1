"""``pai-jobstats`` against a real Prometheus scraping a real ``pai-job-exporter``: its gpu collector on the
simulated NVML library (a stand-in for GPUs) and its jobs collector on a real Slurm-style job (real cgroups, a real
process) that holds two GPUs, keeps one busy and leaves the other idle."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pai_monitoring.jobstats.cli import main
from tests.integration.gpu.conftest import Scenario
from tests.integration.jobs.conftest import SlurmLikeJob
from tests.support.exporter import Exporter, start_exporter
from tests.support.prometheus import Prometheus, running_prometheus

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
GIB = 1 << 30
WAIT_S = 90.0
SAMPLES = 8
"""Scrapes of the job (one a second) before the report: enough for averages and peaks over its life."""


@pytest.fixture
def running_job(slurm_job: SlurmLikeJob) -> Iterator[tuple[SlurmLikeJob, int]]:
    with subprocess.Popen(["sleep", "600"]) as process:
        try:
            slurm_job.add(process.pid)
            yield slurm_job, process.pid
        finally:
            process.kill()
            process.wait(timeout=30)


def scenario_for(pid: int) -> str:
    """Two H200s that the job's process holds: GPU 0 busy (GPM, per-process figures), GPU 1 idle."""
    lines = ["gpu_count = 3"]
    for gpu in range(3):
        lines += [
            f"gpu.{gpu}.name = NVIDIA H200",
            f"gpu.{gpu}.uuid = GPU-0f0f0f0f-0000-0000-0000-00000000000{gpu}",
            f"gpu.{gpu}.memory.total = {140 * GIB}",
            f"gpu.{gpu}.gpm.supported = 1",
        ]
    lines += [
        "gpu.0.utilization.gpu = 96",
        f"gpu.0.memory.used = {100 * GIB}",
        f"gpu.0.process.0 = {pid} {100 * GIB}",
        f"gpu.0.process_util.0 = {pid} 96 40",
        "gpu.0.gpm.sm = 80",
        "gpu.0.gpm.tensor = 45",
        "gpu.0.energy = 1000000",
        "gpu.1.utilization.gpu = 0",
        f"gpu.1.memory.used = {GIB}",
        f"gpu.1.process.0 = {pid} {GIB}",
        "gpu.2.utilization.gpu = 70",  # a GPU of no job: not in the report
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def cluster(
    running_job: tuple[SlurmLikeJob, int],
    scenario: Scenario,
    tmp_path: Path,
) -> Iterator[tuple[Prometheus, str, str]]:
    job, pid = running_job
    scenario.write(scenario_for(pid))
    exporter: Exporter = start_exporter(
        [
            "--node-name=jobstats-it",
            "--collector.gpu",
            "--collector.gpu.interval=0.5",
            "--collector.jobs",
            "--collector.jobs.interval=0.5",
            "--collector.jobs.docker-socket=",
            "--collector.jobs.containerd-socket=",
            "--no-collector.node_health",
        ]
    )
    try:
        rules = [REPO / "rules" / "recording" / "gpu.rules.yml", REPO / "rules" / "recording" / "jobs.rules.yml"]
        with running_prometheus({"pai_job_exporter": [f"127.0.0.1:{exporter.port}"]}, rules) as prometheus:
            selector = f'job_name="{job.job_id}"'
            prometheus.wait_for_series(f"count_over_time(task_info{{{selector}}}[5m]) >= {SAMPLES}", WAIT_S)
            prometheus.wait_for_series(f"count(task_gpu_memory_bytes{{{selector}}}) == 2", WAIT_S)
            yield prometheus, str(job.job_id), f"127.0.0.1:{exporter.port}"
    finally:
        exporter.stop()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_a_job_with_an_idle_gpu_gets_the_hint(
    cluster: tuple[Prometheus, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    prometheus, job_id, target = cluster
    status, out, err = run(capsys, "--prometheus", prometheus.url, "--step", "1s", "--lookback", "10m", job_id)
    assert status == 0, err
    assert f"Job {job_id} of root: 1 task(s) on {target}" in out
    assert "GPUs: 2 held, 1 used" in out
    assert "1 of 2 GPUs was idle for the whole job" in out

    status, out, err = run(
        capsys, "--prometheus", prometheus.url, "--step", "1s", "--lookback", "10m", "--json", job_id
    )
    assert status == 0, err
    report = json.loads(out)
    assert (report["gpus"]["held"], report["gpus"]["used"]) == (2, 1)
    devices = {d["uuid"]: d for d in report["gpus"]["devices"]}
    busy = devices["GPU-0f0f0f0f-0000-0000-0000-000000000000"]
    idle = devices["GPU-0f0f0f0f-0000-0000-0000-000000000001"]
    assert busy["idle_ratio"] == 0
    assert busy["own_use_ratio"] == pytest.approx(0.96)  # its process's own figure (per-process utilisation)
    assert busy["energy_is_share"]
    assert busy["utilization_ratio"] == pytest.approx(0.96)
    assert busy["sm_active_ratio"] == pytest.approx(0.8)  # GPM, once the first of its two samples is past
    assert busy["tensor_active_ratio"] == pytest.approx(0.45)
    assert busy["memory_peak_bytes"] == 100 * GIB
    assert busy["memory_total_bytes"] == 140 * GIB
    assert idle["idle_ratio"] == 1
    assert idle["own_use_ratio"] == 0
    assert idle["sm_active_ratio"] == 0
    assert report["host_memory"]["peak_bytes"] > 0
    assert report["host_memory"]["limit_bytes"] >= report["host_memory"]["peak_bytes"]
    assert report["cpu"]["core_seconds"] is not None
    assert report["job"]["nodes"] == [target]
    assert any("idle for the whole job" in hint for hint in report["hints"])


def test_an_unknown_job_and_an_unreachable_prometheus_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with running_prometheus({"pai_job_exporter": []}) as prometheus:
        status, out, err = run(capsys, "--prometheus", prometheus.url, "--lookback", "10m", "no-such-job")
        assert (status, out) == (2, "")
        assert "has no job, pod or Slurm job 'no-such-job' in the last 10m" in err
    status, out, err = run(capsys, "--prometheus", prometheus.url, "--timeout", "2", "no-such-job")
    assert (status, out) == (2, "")
    assert f"cannot reach Prometheus at {prometheus.url}" in err
