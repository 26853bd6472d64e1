"""Behaviour across collection cycles on writable copies of the fixture trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from pai_monitoring.jobs.collector import JobsCollector, JobsOptions
from pai_monitoring.runtime.collector import CollectorContext
from pai_monitoring.runtime.errors import ConfigError
from tests.fixtures.jobs.generate import MIB, cid
from tests.unit.jobs.helpers import FIXTURES, FakeClock, copy_tree, samples, tree_collector


def _job_value(families: list[Metric], name: str, job: str) -> float:
    values = [v for labels, v in samples(families, name).items() if ("job_name", job) in labels]
    assert len(values) == 1, f"{name} for {job}: {values}"
    return values[0]


def test_second_cycle_gives_cpu_percent_and_network_rates(tmp_path: Path) -> None:
    tree = copy_tree("v1_cgroupfs", tmp_path)
    clock = FakeClock()
    collector = tree_collector(tree, clock=clock)
    first = list(collector.collect())
    assert samples(first, "task_cpu_percent") == {}
    assert samples(first, "task_net_in_byte") == {}

    group = tree / "sys/fs/cgroup/cpu,cpuacct/docker" / cid("job-a")
    (group / "cpuacct.usage").write_text(str(12_500_000_000 + 15_000_000_000))  # 15 s of CPU in 10 s
    dev = tree / "proc/101/net/dev"
    dev.write_text(dev.read_text().replace("1000000", "1500000"))  # +500000 bytes received
    clock.now += 10
    second = list(collector.collect())
    assert _job_value(second, "task_cpu_percent", "job-a") == pytest.approx(150.0)
    assert _job_value(second, "task_cpu_seconds_total", "job-a") == pytest.approx(27.5)
    assert _job_value(second, "task_net_in_byte", "job-a") == pytest.approx(50000.0)
    assert _job_value(second, "task_net_out_byte", "job-a") == pytest.approx(0.0)
    assert _job_value(second, "task_network_receive_bytes_total", "job-a") == 1_500_000


def test_a_container_that_vanishes_is_dropped_and_the_others_still_reported(tmp_path: Path) -> None:
    tree = copy_tree("v1_cgroupfs", tmp_path)
    collector = tree_collector(tree)
    assert _job_value(list(collector.collect()), "task_mem_usage_byte", "job-a") == 250 * MIB
    for controller in ("cpu,cpuacct", "memory", "blkio", "devices", "pids", "systemd"):
        shutil.rmtree(tree / "sys/fs/cgroup" / controller / "docker" / cid("job-a"))
    shutil.rmtree(tree / "proc/101")
    families = list(collector.collect())
    assert all(("job_name", "job-a") not in labels for labels in samples(families, "task_mem_usage_byte"))
    assert _job_value(families, "task_mem_usage_byte", "dlws-7") == 64 * MIB


def test_a_process_that_exits_after_the_walk_is_skipped(tmp_path: Path) -> None:
    tree = copy_tree("v1_cgroupfs", tmp_path)
    shutil.rmtree(tree / "proc/101")  # cgroup.procs still lists 101, /proc no longer has it
    families = list(tree_collector(tree).collect())
    # the identity could not be read: the container is no job this cycle, and nothing failed
    assert all(("job_name", "job-a") not in labels for labels in samples(families, "task_cpu_seconds_total"))
    assert _job_value(families, "task_cpu_seconds_total", "dlws-7") == 2.0


def test_pause_sandboxes_and_non_job_containers_give_no_series() -> None:
    families = list(tree_collector(FIXTURES / "kube_containerd" / "tree").collect())
    info = samples(families, "task_info")
    containers = {dict(labels)["container"] for labels in info}
    assert containers == {"main", "sidecar"}
    qos = {dict(labels)["qos_class"] for labels in info}
    assert qos == {"Guaranteed", "Burstable", "BestEffort"}


def test_without_fresh_gpu_data_no_gpu_series_are_emitted() -> None:
    collector = tree_collector(FIXTURES / "kube_containerd" / "tree", gpu=False)
    names = {family.name for family in collector.collect()}
    assert not names & {
        "task_gpu_percent",
        "task_gpu_memory_bytes",
        "gpu_used_by_external_process_count",
        "gpu_used_by_zombie_container_count",
    }
    assert "task_cpu_seconds" in names  # prometheus_client names a counter family without "_total"


def test_external_and_zombie_gpu_processes() -> None:
    families = list(tree_collector(FIXTURES / "kube_containerd" / "tree").collect())
    assert samples(families, "gpu_used_by_external_process_count") == {(("minor_number", "3"), ("pid", "480")): 1.0}
    zombie = samples(families, "gpu_used_by_zombie_container_count")
    assert zombie == {(("container_id", cid("deleted-task")), ("minor_number", "3")): 1.0}


def test_a_missing_cgroup_filesystem_gives_no_task_series_and_no_error(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    collector = JobsCollector(
        JobsOptions(docker_socket="", containerd_socket=""),
        CollectorContext(proc_root=tmp_path / "proc", sys_root=tmp_path / "sys"),
    )
    families = list(collector.collect())
    assert all(not family.samples for family in families)


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"socket_timeout": 0.0}, "socket_timeout"),
        ({"socket_timeout": 30.0}, "socket_timeout"),
        ({"gpu_state_max_age": -1.0}, "gpu_state_max_age"),
    ],
)
def test_invalid_options_name_the_option(options: dict[str, float], flag: str) -> None:
    with pytest.raises(ConfigError) as error:
        JobsOptions(**options).validate()  # type: ignore[arg-type]
    assert error.value.flag == flag


def _podman_with_gpu_process(tmp_path: Path) -> Path:
    tree = copy_tree("podman", tmp_path)
    (tree / "gpu_state.json").write_text(
        '{"devices": [{"index": 0, "minor_number": "0", "uuid": "GPU-0", "utilization_gpu_percent": 5.0, '
        '"memory_used_percent": 1.0, "memory_used_bytes": 1, "memory_total_bytes": 100, "mig_device_uuids": []}], '
        '"processes": [{"pid": 501, "minor_number": "0", "used_memory_bytes": 7}]}'
    )
    return tree


def test_a_podman_container_whose_conmon_died_holds_its_gpu_as_a_zombie(tmp_path: Path) -> None:
    tree = _podman_with_gpu_process(tmp_path)
    running = list(tree_collector(tree).collect())
    assert samples(running, "gpu_used_by_zombie_container_count") == {}
    assert _job_value(running, "task_gpu_memory_bytes", "job-p") == 7
    job = cid("podman-job")
    (tree / f"state/podman/run/overlay-containers/{job}/userdata/conmon.pid").write_text("999999")
    stopped = list(tree_collector(tree).collect())
    assert samples(stopped, "gpu_used_by_zombie_container_count") == {(("container_id", job), ("minor_number", "0")): 1}


def test_a_podman_container_podman_no_longer_knows_is_a_zombie(tmp_path: Path) -> None:
    tree = _podman_with_gpu_process(tmp_path)
    (tree / "state/podman/graph/overlay-containers/containers.json").write_text("[]")
    families = list(tree_collector(tree).collect())
    job = cid("podman-job")
    assert samples(families, "gpu_used_by_zombie_container_count") == {
        (("container_id", job), ("minor_number", "0")): 1
    }


def test_the_memory_limit_falls_back_to_limit_in_bytes_without_the_hierarchical_figure(tmp_path: Path) -> None:
    tree = copy_tree("v1_cgroupfs", tmp_path)
    group = tree / "sys/fs/cgroup/memory/docker" / cid("job-a")
    stat = group / "memory.stat"
    stat.write_text("".join(line for line in stat.read_text().splitlines(True) if "hierarchical" not in line))
    (group / "memory.limit_in_bytes").write_text(str(512 * MIB))
    families = list(tree_collector(tree).collect())
    assert _job_value(families, "task_mem_limit_byte", "job-a") == 512 * MIB
    assert _job_value(families, "task_mem_usage_percent", "job-a") == pytest.approx(250 / 512 * 100)
