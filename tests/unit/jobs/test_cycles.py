"""Behaviour across collection cycles and layouts, on fixture trees built from ``tests/fixtures/jobs/generate.py``."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from pai_monitoring.jobs.collector import JobsCollector, JobsOptions
from pai_monitoring.runtime.collector import CollectorContext
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.shared_model import JOB_INDEX
from tests.fixtures.jobs.generate import KUBERNETES, MIB, SLURM, Owners, Proc, cid, stat_line
from tests.unit.jobs.helpers import FakeClock, make_tree, samples, tree_collector

Trees = dict[str, tuple[Path, Owners]]


def _job_value(families: list[Metric], name: str, job: str) -> float:
    values = [v for labels, v in samples(families, name).items() if ("job_name", job) in labels]
    assert len(values) == 1, f"{name} for {job}: {values}"
    return values[0]


def _job_sum(families: list[Metric], name: str, job: str) -> float:
    return sum(v for labels, v in samples(families, name).items() if ("job_name", job) in labels)


def test_second_cycle_gives_cpu_percent_and_network_rates(tmp_path: Path) -> None:
    tree, _ = make_tree("v1_cgroupfs", tmp_path)
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


def _remove_container(tree: Path, cgroup_path: str, pid: int) -> None:
    """The container exits: its cgroup directories and its process go away."""
    cgroup = tree / "sys/fs/cgroup"
    roots = [c for c in cgroup.iterdir() if c.is_dir() and not c.is_symlink()]
    for root in [*roots, cgroup]:
        if (root / cgroup_path.lstrip("/")).is_dir():
            shutil.rmtree(root / cgroup_path.lstrip("/"))
    shutil.rmtree(tree / "proc" / str(pid))


def _totals(families: list[Metric], job: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every ``_total`` series (and cumulative byte gauge) of a job: (name, labels) -> value."""
    found = {}
    for name in (
        "task_cpu_seconds_total",
        "task_network_receive_bytes_total",
        "task_network_transmit_bytes_total",
        "task_block_in_byte",
        "task_block_out_byte",
    ):
        for labels, value in samples(families, name).items():
            if ("job_name", job) in labels:
                found[(name, labels)] = value
    return found


def _pod_containers(tree: Path, pod_name: str) -> dict[str, str]:
    """Container name -> id of a pod's containers, from containerd's task state."""
    found = {}
    for bundle in (tree / "state/containerd/k8s.io").iterdir():
        annotations = json.loads((bundle / "config.json").read_text())["annotations"]
        name = annotations.get("io.kubernetes.cri.container-name")
        if annotations.get("io.kubernetes.cri.sandbox-name") == pod_name and name:
            found[name] = bundle.name
    return found


class _Container:
    """A running container of a fixture tree whose counters the test advances."""

    def __init__(self, tree: Path, container_id: str) -> None:
        self.id = container_id
        self.tree = tree
        self.scope = next((tree / "sys/fs/cgroup").glob(f"kubepods.slice/**/cri-containerd-{container_id}.scope"))
        self.pid = int((self.scope / "cgroup.procs").read_text().split()[0])
        self.cpu_usec, self.read = 1_000_000, 0

    def work(self, cpu_usec: int, read: int) -> None:
        self.cpu_usec += cpu_usec
        self.read += read
        (self.scope / "cpu.stat").write_text(f"usage_usec {self.cpu_usec}\nuser_usec 0\nsystem_usec 0\n")
        (self.scope / "io.stat").write_text(f"254:0 rbytes={self.read} wbytes=0 rios=1 wios=0\n")

    def exit(self) -> None:
        shutil.rmtree(self.scope)
        shutil.rmtree(self.tree / "proc" / str(self.pid))


def _pod_network(tree: Path, pids: list[int], rx: int) -> None:
    """The pod's network namespace has received ``rx`` bytes: every process in it reads the same counters."""
    for pid in pids:
        dev = tree / "proc" / str(pid) / "net" / "dev"
        lines = dev.read_text().splitlines()
        lines[3] = f"  eth0: {rx} 1 0 0 0 0 0 0 {rx // 2} 1 0 0 0 0 0 0"
        dev.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("leaving", ["main", "sidecar"])
def test_a_container_of_a_two_container_job_that_exits_makes_no_total_fall(tmp_path: Path, leaving: str) -> None:
    """Job train-b runs in the two containers of one pod, which share the pod's network namespace; one of them
    exits while the other keeps working. Every series of the job only grows or ends (the pod's network counters
    move on under the remaining container), although the job's plain sum over its containers falls."""
    tree, _ = make_tree("kube_v2_systemd_containerd", tmp_path)
    ids = _pod_containers(tree, "train-b-worker-0")
    assert set(ids) == {"main", "sidecar"}
    containers = {name: _Container(tree, container_id) for name, container_id in ids.items()}
    clock = FakeClock()
    collector = tree_collector(tree, clock=clock)
    history = []

    def cycle(rx: int) -> None:
        for container in containers.values():
            container.work(5_000_000, 4096)
        _pod_network(tree, [c.pid for c in containers.values()], rx)
        clock.now += 30
        history.append(_totals(list(collector.collect()), "train-b"))

    cycle(1000)
    cycle(2000)
    containers.pop(leaving).exit()
    cycle(3000)
    cycle(4000)

    for before, after in itertools.pairwise(history):
        for key in before.keys() & after.keys():
            assert after[key] >= before[key], f"{key} fell from {before[key]} to {after[key]}"
    cpu_sums = [sum(v for (name, _), v in h.items() if name == "task_cpu_seconds_total") for h in history]
    assert cpu_sums[2] < cpu_sums[1], "the job's plain sum falls: the reason these series are per container"
    (stays,) = containers.values()
    last = {(name, dict(labels)["container_id"]) for name, labels in history[-1]}
    assert {container_id for _, container_id in last} == {stays.id}
    assert {name for name, _ in last} == {
        "task_cpu_seconds_total", "task_block_in_byte", "task_block_out_byte",
        "task_network_receive_bytes_total", "task_network_transmit_bytes_total",
    }  # fmt: skip


def test_a_container_that_vanishes_is_dropped_and_the_others_still_reported(tmp_path: Path) -> None:
    tree, _ = make_tree("v1_cgroupfs", tmp_path)
    collector = tree_collector(tree)
    assert _job_value(list(collector.collect()), "task_mem_usage_byte", "job-a") == 250 * MIB
    _remove_container(tree, f"/docker/{cid('job-a')}", 101)
    families = list(collector.collect())
    assert all(("job_name", "job-a") not in labels for labels in samples(families, "task_mem_usage_byte"))
    assert _job_value(families, "task_mem_usage_byte", "dlws-7") == 64 * MIB


def test_a_process_that_exits_after_the_walk_is_skipped(tmp_path: Path) -> None:
    tree, _ = make_tree("v1_cgroupfs", tmp_path)
    shutil.rmtree(tree / "proc/101")  # cgroup.procs still lists 101, /proc no longer has it
    families = list(tree_collector(tree).collect())
    # the identity could not be read: the container is no job this cycle, and nothing failed
    assert all(("job_name", "job-a") not in labels for labels in samples(families, "task_cpu_seconds_total"))
    assert _job_value(families, "task_cpu_seconds_total", "dlws-7") == 2.0


@pytest.mark.parametrize("scenario", KUBERNETES)
def test_every_kubernetes_layout_names_pods_qos_classes_and_drops_sandboxes(scenario: str, trees: Trees) -> None:
    tree, _ = trees[scenario]
    info = [dict(labels) for labels in samples(list(tree_collector(tree).collect()), "task_info")]
    by_job = {(i["job_name"], i["qos_class"]) for i in info}
    # one pod per QoS class, and a static pod (manifest-set UID) running a job; the pause sandboxes, the static
    # control-plane pod and the conmon cgroups give nothing
    expected = {("train-g", "Guaranteed"), ("train-b", "Burstable"), ("eval-e", "BestEffort")}
    expected.add(("static-job", "Guaranteed"))
    if "crio" in scenario:  # CRI-O still knows the stopped container left in pod train-g, and names its job
        expected.add(("old-job", "Guaranteed"))
    assert by_job == expected
    assert len([i for i in info if i["job_name"] == "train-b"]) == 2
    if "docker" in scenario:  # no Docker socket here: cri-dockerd's names are the Docker API's to tell
        assert {i["pod_name"] for i in info} == {"unknown"}
        assert {i["runtime"] for i in info} == {"cri"}
    else:
        pods = {i["pod_name"] for i in info}
        assert pods == {"train-g-worker-0", "train-b-worker-0", "eval-e-0", "static-trainer-node-1"}
        assert {i["container"] for i in info if i["job_name"] == "train-b"} == {"main", "sidecar"}
        assert {i["runtime"] for i in info} == {"crio" if "crio" in scenario else "containerd"}


@pytest.mark.parametrize("scenario", KUBERNETES + SLURM)
def test_gpu_processes_of_jobs_are_attributed_and_only_the_outsider_is_external(scenario: str, trees: Trees) -> None:
    tree, owners = trees[scenario]
    families = list(tree_collector(tree).collect())
    external = {dict(labels)["pid"] for labels in samples(families, "gpu_used_by_external_process_count")}
    assert external == {str(pid) for pid, owner in owners.items() if owner is None}
    zombies = {dict(labels)["container_id"] for labels in samples(families, "gpu_used_by_zombie_container_count")}
    assert zombies == {owner.removeprefix("zombie:") for owner in owners.values() if owner and "zombie:" in owner}
    for pid, owner in owners.items():
        if owner and not owner.startswith("zombie:"):
            assert _job_sum(families, "task_gpu_memory_bytes", owner) > 0, (pid, owner)


def test_without_fresh_gpu_data_no_gpu_series_are_emitted(trees: Trees) -> None:
    collector = tree_collector(trees["kube_v2_systemd_containerd"][0], gpu=False)
    names = {family.name for family in collector.collect() if family.samples}
    assert not names & {
        "task_gpu_percent",
        "task_gpu_memory_bytes",
        "gpu_used_by_external_process_count",
        "gpu_used_by_zombie_container_count",
    }
    assert "task_cpu_seconds" in names  # prometheus_client names a counter family without "_total"
    assert "zombie_container_count" in names  # an ended container is reported with or without GPU data


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
    tree, _ = make_tree("podman", tmp_path)
    (tree / "gpu_state.json").write_text(
        '{"devices": [{"index": 0, "minor_number": "0", "uuid": "GPU-0", "utilization_gpu_percent": 5.0, '
        '"memory_used_percent": 1.0, "memory_used_bytes": 1, "memory_total_bytes": 100, "mig_device_uuids": []}], '
        '"processes": [{"pid": 501, "minor_number": "0", "used_memory_bytes": 7}]}'
    )
    return tree


def _zombie_ids(families: list[Metric], name: str = "gpu_used_by_zombie_container_count") -> set[str]:
    return {dict(labels)["container_id"] for labels in samples(families, name)}


def test_a_podman_container_whose_conmon_died_holds_its_gpu_as_a_zombie(tmp_path: Path) -> None:
    tree = _podman_with_gpu_process(tmp_path)
    running = list(tree_collector(tree).collect())
    assert _zombie_ids(running) == set()
    assert _zombie_ids(running, "zombie_container_count") == set()
    assert _job_value(running, "task_gpu_memory_bytes", "job-p") == 7
    job = cid("podman-job")
    (tree / f"state/storage/run/overlay-containers/{job}/userdata/conmon.pid").write_text("999999")
    stopped = list(tree_collector(tree).collect())
    assert samples(stopped, "gpu_used_by_zombie_container_count") == {
        (
            ("container_id", job), ("index", "0"), ("job_name", "job-p"), ("minor_number", "0"),
            ("node_name", "node-1"), ("runtime", "podman"), ("username", "grace"), ("uuid", "GPU-0"),
        ): 1
    }  # fmt: skip
    assert _zombie_ids(stopped, "zombie_container_count") == {job}


def test_a_podman_container_podman_no_longer_knows_is_a_zombie(tmp_path: Path) -> None:
    tree = _podman_with_gpu_process(tmp_path)
    listing = tree / "state/storage/graph/overlay-containers/containers.json"
    listing.write_text("[]")
    # a store that has never listed a running podman container may not be the one podman uses (its graph root is
    # configurable): an unlisted container proves nothing
    assert _zombie_ids(list(tree_collector(tree).collect())) == set()
    collector = tree_collector(tree)
    listing.write_text(json.dumps([{"id": cid("podman-job"), "names": ["pai-job-p"]}]))
    assert _zombie_ids(list(collector.collect())) == set()
    listing.write_text("[]")
    os.utime(listing, (1, 1))  # a new modification time: the listing is read again
    assert _zombie_ids(list(collector.collect())) == {cid("podman-job")}


def test_a_slurm_job_is_a_zombie_once_its_last_stepd_is_gone(tmp_path: Path) -> None:
    tree, _ = make_tree("slurm_v2", tmp_path)
    job = tree / "sys/fs/cgroup/system.slice/slurmstepd.scope/job_5151"
    assert "5151" not in _zombie_ids(list(tree_collector(tree).collect()), "zombie_container_count")
    for step in ("step_extern", "step_batch"):
        shutil.rmtree(job / step)
    assert "5151" not in _zombie_ids(list(tree_collector(tree).collect()), "zombie_container_count")
    # the step's stepd ends and removes its directory; a task it could not kill keeps the step's user directory
    shutil.rmtree(job / "step_0" / "slurm")
    families = list(tree_collector(tree).collect())
    assert "5151" in _zombie_ids(families, "zombie_container_count")
    assert "5151" in _zombie_ids(families)  # its task still holds GPUs


def test_the_memory_limit_falls_back_to_limit_in_bytes_without_the_hierarchical_figure(tmp_path: Path) -> None:
    tree, _ = make_tree("v1_cgroupfs", tmp_path)
    group = tree / "sys/fs/cgroup/memory/docker" / cid("job-a")
    stat = group / "memory.stat"
    stat.write_text("".join(line for line in stat.read_text().splitlines(True) if "hierarchical" not in line))
    (group / "memory.limit_in_bytes").write_text(str(512 * MIB))
    families = list(tree_collector(tree).collect())
    assert _job_value(families, "task_mem_limit_byte", "job-a") == 512 * MIB
    assert _job_value(families, "task_mem_usage_percent", "job-a") == pytest.approx(250 / 512 * 100)


def test_a_job_process_in_d_state_with_a_never_answering_environ_does_not_stop_the_cycle(tmp_path: Path) -> None:
    """The environment of a process stuck in the kernel is not read (reading it takes the process's memory-map
    lock): here it is a FIFO nobody writes to, which a plain read would wait on forever. The job is named once the
    process leaves D state."""
    tree, _ = make_tree("v1_cgroupfs", tmp_path)
    environ = tree / "proc/101/environ"
    saved = environ.read_bytes()
    environ.unlink()
    os.mkfifo(environ)
    stat = tree / "proc/101/stat"
    stat.write_text(stat_line(Proc(101, state="D")))
    collector = tree_collector(tree)
    families = list(collector.collect())
    assert all(("job_name", "job-a") not in labels for labels in samples(families, "task_cpu_seconds_total"))
    assert _job_value(families, "task_mem_usage_byte", "dlws-7") == 64 * MIB
    environ.unlink()
    environ.write_bytes(saved)
    stat.write_text(stat_line(Proc(101, state="S")))
    assert _job_value(list(collector.collect()), "task_cpu_seconds_total", "job-a") == 12.5


def test_the_job_index_lets_other_collectors_find_a_process_job(trees: Trees) -> None:
    tree, _ = trees["slurm_v2"]
    collector = tree_collector(tree)
    list(collector.collect())
    index = collector.context.shared.latest(JOB_INDEX, max_age=60)
    assert index is not None
    found = index.find("/system.slice/slurmstepd.scope/job_5151/step_0/user/task_0")
    assert found is not None
    assert (found.job_name, found.username, found.container_id) == ("5151", "bob", "5151")
    assert index.find("/system.slice/slurmstepd.scope/system") is None


def test_runtime_state_that_cannot_tell_marks_nothing_ended(tmp_path: Path) -> None:
    """A container the runtime we read cannot know about (rootless, another containerd, unreadable state) is not
    one it has ended: no false zombies on a healthy node."""
    tree, _ = make_tree("podman", tmp_path)
    rootless = f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{cid('rootless')}.scope"
    shutil.copytree(tree / "sys/fs/cgroup/memory/libpod_parent" / f"libpod-{cid('podman-job')}", tmp_path / "copy")
    for controller in ("memory", "cpu,cpuacct", "pids", "blkio", "devices", "freezer", "systemd"):
        shutil.copytree(tmp_path / "copy", tree / "sys/fs/cgroup" / controller / rootless.lstrip("/"))
    assert _zombie_ids(list(tree_collector(tree).collect()), "zombie_container_count") == set()

    kube, _ = make_tree("kube_v2_systemd_containerd", tmp_path)
    assert _zombie_ids(list(tree_collector(kube).collect()), "zombie_container_count") != set()
    namespace = kube / "state/containerd/k8s.io"
    shutil.rmtree(namespace)
    namespace.mkdir()  # a containerd that runs none of this node's containers (k3s keeps its own elsewhere)
    assert _zombie_ids(list(tree_collector(kube).collect()), "zombie_container_count") == set()
    shutil.rmtree(kube / "state/containerd")  # containerd's state cannot be read (absent, or no permission)
    assert _zombie_ids(list(tree_collector(kube).collect()), "zombie_container_count") == set()
