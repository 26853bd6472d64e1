"""Per-job GPU use on shared GPUs: each job's own utilisation from its processes, and the GPU's energy split
between the jobs holding it, as a counter that never goes back."""

from __future__ import annotations

import pytest

from pai_monitoring.jobs.derive import Observation, Rates, gpu_shares, job_gpu_utilization
from pai_monitoring.jobs.kernel import CgroupCounters
from pai_monitoring.jobs.layouts import Unit
from pai_monitoring.shared_model import GpuDevice, GpuProcess, GpuState

A = ("alice", "job-a", "worker", "0", "a-0", "default")
B = ("bob", "job-b", "worker", "0", "b-0", "default")


def obs(name: str, gpus: set[str], *processes: GpuProcess) -> Observation:
    counters = CgroupCounters(None, None, None, None, None, None)
    return Observation(
        unit=Unit("slurm", name, f"/slurm/{name}", "slurm"), container_id=name, runtime="slurm", identity=None,
        service=None, kube=None, slurm=None, counters=counters, netns=None, net_bytes=None,
        gpus=frozenset(gpus), gpu_processes=tuple(processes),
    )  # fmt: skip


def process(pid: int, minor: str, sm: float | None, mem: float | None = 0.0) -> GpuProcess:
    return GpuProcess(pid, minor, 1 << 30, sm, mem)


def state(*energies: tuple[str, float | None], processes: tuple[GpuProcess, ...] = ()) -> GpuState:
    devices = tuple(
        GpuDevice(int(minor), minor, f"GPU-{minor}", 50.0, 10.0, 1, 2, energy_joules=joules)
        for minor, joules in energies
    )
    return GpuState(devices=devices, processes=processes)


def test_a_jobs_own_utilisation_is_the_sum_of_its_processes() -> None:
    group = [obs("1", {"0"}, process(10, "0", 30.0, 5.0), process(11, "0", 12.5, 1.0)), obs("2", {"0", "1"})]
    assert job_gpu_utilization(group, "0") == 42.5
    assert job_gpu_utilization(group, "0", sm=False) == 6.0
    assert job_gpu_utilization(group, "1") == 0.0  # held, no process there: nothing ran
    assert job_gpu_utilization([obs("3", {"0"}, process(12, "0", None))], "0") is None  # MIG: unknown


@pytest.mark.parametrize(
    ("holders", "shares"),
    [
        ({A: 30.0, B: 10.0}, {A: 0.75, B: 0.25}),
        ({A: 0.0, B: 0.0}, {A: 0.5, B: 0.5}),  # nobody ran kernels: the idle power is shared
        ({A: 30.0, B: None}, {A: 0.5, B: 0.5}),  # one figure unknown: no guessing
        ({A: 80.0}, {A: 1.0}),
        ({}, {}),
    ],
)
def test_gpu_shares(holders: dict[tuple[str, ...], float | None], shares: dict[tuple[str, ...], float]) -> None:
    assert gpu_shares(holders) == shares


def test_energy_of_a_shared_gpu_is_split_by_use_and_never_goes_back() -> None:
    rates = Rates()
    busy, light = process(10, "0", 75.0), process(20, "0", 25.0)
    groups = {A: [obs("a", {"0"}, busy)], B: [obs("b", {"0", "1"}, light)]}
    # first sight: no interval yet, each job's counter starts at 0 on the GPUs that report energy
    assert rates.gpu_energy(groups, state(("0", 1000.0), ("1", None))) == {(A, "0"): 0.0, (B, "0"): 0.0}
    joules = rates.gpu_energy(groups, state(("0", 1400.0), ("1", None)))
    assert joules == {(A, "0"): 300.0, (B, "0"): 100.0}
    # the driver was reloaded and the GPU's counter restarted: that interval gives nothing, nothing goes back
    joules = rates.gpu_energy(groups, state(("0", 50.0), ("1", None)))
    assert joules == {(A, "0"): 300.0, (B, "0"): 100.0}
    joules = rates.gpu_energy(groups, state(("0", 250.0), ("1", None)))
    assert joules == {(A, "0"): 450.0, (B, "0"): 150.0}
    # job b leaves: it is forgotten, job a keeps counting and now gets the whole GPU
    joules = rates.gpu_energy({A: groups[A]}, state(("0", 450.0), ("1", None)))
    assert joules == {(A, "0"): 650.0}


def test_no_job_on_a_gpu_gets_nothing_of_it() -> None:
    rates = Rates()
    groups = {A: [obs("a", {"0"})]}
    rates.gpu_energy(groups, state(("0", 0.0), ("1", 0.0)))
    assert rates.gpu_energy(groups, state(("0", 100.0), ("1", 500.0))) == {(A, "0"): 100.0}
