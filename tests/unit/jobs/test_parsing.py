"""Pure parsers: cgroup names, kernel files, environment blocks, GPU lists."""

from __future__ import annotations

import pytest

from pai_monitoring.jobs.gpu_attribution import allowed_minors, unit_gpus, visible_minors
from pai_monitoring.jobs.identity import UNKNOWN, job_identity, kube_meta, merged
from pai_monitoring.jobs.kernel import parse_blkio_v1, parse_environ, parse_io_stat_v2, parse_net_dev
from pai_monitoring.jobs.layouts import classify, classify_path
from pai_monitoring.shared_model import GpuDevice, GpuProcess, GpuState

ID = "0123456789abcdef" * 4
UID = "3f2a1b4c-1111-2222-3333-444455556666"
NONE: frozenset[str] = frozenset()


@pytest.mark.parametrize(
    ("path", "runtime", "qos"),
    [
        (f"/docker/{ID}", "docker", None),
        (f"/system.slice/docker-{ID}.scope", "docker", None),
        (f"/kubepods/pod{UID}/{ID}", "cri", "Guaranteed"),
        (f"/kubepods/burstable/pod{UID}/{ID}", "cri", "Burstable"),
        (f"/kubepods/besteffort/pod{UID}/{ID}", "cri", "BestEffort"),
        (
            f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/cri-containerd-{ID}.scope",
            "containerd",
            "Guaranteed",
        ),
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}.slice/"
            f"cri-containerd-{ID}.scope",
            "containerd",
            "Burstable",
        ),
        (
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice/"
            f"crio-{ID}.scope",
            "crio",
            "BestEffort",
        ),
        (f"/kubepods/burstable/pod{UID}/crio-{ID}", "crio", "Burstable"),
        (f"/libpod_parent/libpod-{ID}", "podman", None),
        (f"/machine.slice/libpod-{ID}.scope", "podman", None),
        (f"/machine.slice/libpod-{ID}.scope/container", "podman", None),
    ],
)
def test_container_cgroups_of_every_runtime_and_driver_are_recognised(path: str, runtime: str, qos: str | None) -> None:
    unit = classify_path(path, NONE)
    assert unit is not None
    assert (unit.kind, unit.ident, unit.runtime, unit.qos_class) == ("container", ID, runtime, qos)
    if qos is not None:
        assert unit.pod_uid == UID


STATIC_UID = "7e4ba4a9cb95bcaa347a557054ba1244"  # the kubelet's MD5 of a static pod's manifest
MANIFEST_UID = "static-trainer-01"  # a UID the manifest itself sets


@pytest.mark.parametrize(
    ("path", "uid", "qos"),
    [
        # the kubelet's cgroup root (--cgroup-root=/kubelet, as kind sets it) prefixes every name
        (f"/kubelet/kubepods/burstable/pod{UID}/{ID}", UID, "Burstable"),
        (f"/kubelet/kubepods/pod{UID}/crio-{ID}", UID, "Guaranteed"),
        (
            f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
            f"kubelet-kubepods-besteffort-pod{UID.replace('-', '_')}.slice/cri-containerd-{ID}.scope",
            UID,
            "BestEffort",
        ),
        (
            f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID.replace('-', '_')}.slice/crio-{ID}.scope",
            UID,
            "Guaranteed",
        ),
        # a nested root: each slice carries all of its parents' names
        (
            f"/k8s.slice/k8s-node.slice/k8s-node-kubepods.slice/k8s-node-kubepods-burstable.slice/"
            f"k8s-node-kubepods-burstable-pod{UID.replace('-', '_')}.slice/docker-{ID}.scope",
            UID,
            "Burstable",
        ),
        # static pods: the manifest's hash, or any UID the manifest sets
        (f"/kubepods/burstable/pod{STATIC_UID}/{ID}", STATIC_UID, "Burstable"),
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/crio-{ID}.scope",
            STATIC_UID,
            "Burstable",
        ),
        (f"/kubepods.slice/kubepods-podstatic_trainer_01.slice/cri-containerd-{ID}.scope", MANIFEST_UID, "Guaranteed"),
        (f"/kubepods/pod{MANIFEST_UID}/{ID}", MANIFEST_UID, "Guaranteed"),
    ],
)
def test_pods_below_a_kubelet_cgroup_root_and_static_pods_keep_their_uid_and_qos(path: str, uid: str, qos: str) -> None:
    unit = classify_path(path, NONE)
    assert unit is not None
    assert (unit.kind, unit.ident, unit.pod_uid, unit.qos_class) == ("container", ID, uid, qos)


def test_conmon_and_pod_level_cgroups_are_not_containers() -> None:
    assert classify_path(f"/machine.slice/libpod-conmon-{ID}.scope", NONE) is None
    assert classify_path(f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice", NONE) is None
    assert (
        classify_path(f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-conmon-{ID}.scope", NONE) is None
    )
    assert classify_path(f"/system.slice/crio-conmon-{ID}.scope", NONE) is None
    assert classify_path(f"/kubepods/besteffort/pod{UID}/crio-conmon-{ID}", NONE) is None
    assert classify_path("/user.slice/user-1000.slice/session-3.scope", NONE) is None
    assert classify_path("/kubepods.slice/kubepods-burstable.slice", NONE) is None
    assert classify_path(f"/pods/pod{UID}/x", NONE) is None  # "pod" dirs count only below kubepods


@pytest.mark.parametrize(
    ("path", "ident", "uid", "unit_path"),
    [
        ("/slurm/uid_1000/job_77/step_0/task_0", "77", 1000, "/slurm/uid_1000/job_77"),
        ("/slurm/uid_1000/job_77/step_extern/task_0", "77", 1000, "/slurm/uid_1000/job_77"),
        ("/slurm_node2/uid_1001/job_78/step_batch", "78", 1001, "/slurm_node2/uid_1001/job_78"),
        (
            "/system.slice/slurmstepd.scope/job_79/step_0/user/task_0",
            "79",
            None,
            "/system.slice/slurmstepd.scope/job_79",
        ),
        (
            "/system.slice/slurmstepd.scope/job_79/step_0/user/task_special",
            "79",
            None,
            "/system.slice/slurmstepd.scope/job_79",
        ),
        (
            "/system.slice/node2_slurmstepd.scope/job_80/step_extern/user/task_0",
            "80",
            None,
            "/system.slice/node2_slurmstepd.scope/job_80",
        ),
        # Slurm 26.05 names the job directory by its SLUID; a site slice (CgroupSlice) moves the scope
        (
            "/hpc.slice/slurmstepd.scope/s5K1KKYAYG5D00/step_0/user/task_0",
            "s5K1KKYAYG5D00",
            None,
            "/hpc.slice/slurmstepd.scope/s5K1KKYAYG5D00",
        ),
    ],
)
def test_slurm_jobs_of_every_layout_are_found(path: str, ident: str, uid: int | None, unit_path: str) -> None:
    unit = classify_path(path, NONE)
    assert unit is not None
    assert (unit.kind, unit.ident, unit.slurm_uid, unit.path) == ("slurm", ident, uid, unit_path)


def test_slurm_directories_that_are_no_job_are_not_units() -> None:
    assert classify_path("/system.slice/slurmstepd.scope/system", NONE) is None  # idle stepds
    assert classify_path("/system.slice/node1_slurmstepd.scope/slurmd", NONE) is None
    assert classify_path("/other/job_79", NONE) is None
    assert classify_path("/slurm/job_79", NONE) is None
    assert classify_path("/system.slice/slurmstepd.scope/sNOTASLUID", NONE) is None


def test_only_listed_systemd_services_are_units() -> None:
    unit = classify(["system.slice"], "grafana-server.service", frozenset({"grafana-server"}))
    assert unit is not None
    assert (unit.kind, unit.ident) == ("service", "grafana-server")
    assert classify(["system.slice"], "cron.service", frozenset({"grafana-server"})) is None


def test_blkio_v1_sums_reads_and_writes_over_devices_and_ignores_totals() -> None:
    data = b"8:0 Read 100\n8:0 Write 10\n8:0 Total 110\n8:16 Read 1\n8:16 Write 2\nTotal 113\n"
    assert parse_blkio_v1(data) == (101, 12)
    assert parse_blkio_v1(b"Total 0\n") is None


def test_io_stat_v2_sums_devices() -> None:
    data = b"8:0 rbytes=100 wbytes=10 rios=1 wios=1 dbytes=0 dios=0\n8:16 rbytes=5 wbytes=6 rios=1 wios=1\n"
    assert parse_io_stat_v2(data) == (105, 16)


def test_net_dev_excludes_loopback() -> None:
    data = (
        b"Inter-|   Receive | Transmit\n face |bytes packets|bytes\n"
        b"    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n"
        b"  eth0: 100 1 0 0 0 0 0 0 200 1 0 0 0 0 0 0\n"
        b"  eth1: 1 1 0 0 0 0 0 0 2 1 0 0 0 0 0 0\n"
    )
    assert parse_net_dev(data) == (101, 202)


def test_environ_keeps_values_with_equals_signs_and_filters_keys() -> None:
    data = b"A=1\0PAI_JOB_NAME=x=y\0broken\0\0"
    assert parse_environ(data) == {"A": "1", "PAI_JOB_NAME": "x=y"}
    assert parse_environ(data, {"PAI_JOB_NAME"}) == {"PAI_JOB_NAME": "x=y"}


def test_identity_follows_the_original_keys_and_precedence() -> None:
    values = merged(
        {"PAI_JOB_NAME": "from-label", "PAI_USER_NAME": "label-user", "unrelated": "x"},
        {"PAI_USER_NAME": "env-user", "FC_TASK_INDEX": "3", "APP_ID": "app-1", "DLWS_VC_NAME": "vc"},
    )
    identity = job_identity(values)
    assert identity.labels() == ("env-user", "from-label", UNKNOWN, "3", "app-1", "vc")


def test_dlws_keys_stand_in_for_pai_keys() -> None:
    identity = job_identity({"DLWS_JOB_ID": "j", "DLWS_USER_NAME": "u"})
    assert (identity.job_name, identity.username, identity.role_name) == ("j", "u", UNKNOWN)


def test_kube_metadata_from_cri_annotations_and_docker_labels() -> None:
    cri = kube_meta(
        {
            "io.kubernetes.cri.sandbox-name": "p",
            "io.kubernetes.cri.sandbox-namespace": "ns",
            "io.kubernetes.cri.container-name": "c",
        }
    )
    assert cri is not None
    assert (cri.pod_name, cri.namespace, cri.container, cri.sandbox) == ("p", "ns", "c", False)
    dockershim = kube_meta({"io.kubernetes.pod.name": "p2", "io.kubernetes.docker.type": "podsandbox"})
    assert dockershim is not None
    assert (dockershim.pod_name, dockershim.sandbox) == ("p2", True)
    assert kube_meta({"maintainer": "x"}) is None


def _gpus(count: int = 4, mig: tuple[str, ...] = ()) -> GpuState:
    devices = tuple(
        GpuDevice(i, str(i + 10), f"GPU-{i}", 50.0, 25.0, 1, 4, mig if i == 0 else ()) for i in range(count)
    )
    return GpuState(devices=devices, processes=())


@pytest.mark.parametrize(
    ("env", "minors"),
    [
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, {"10", "11", "12", "13"}),
        ({"NVIDIA_VISIBLE_DEVICES": "none"}, set()),
        ({"NVIDIA_VISIBLE_DEVICES": "void"}, set()),
        ({"NVIDIA_VISIBLE_DEVICES": ""}, set()),
        ({"NVIDIA_VISIBLE_DEVICES": "1,3"}, {"11", "13"}),
        ({"NVIDIA_VISIBLE_DEVICES": "GPU-2"}, {"12"}),
        ({"NVIDIA_VISIBLE_DEVICES": "MIG-x"}, {"10"}),
        ({"NVIDIA_VISIBLE_DEVICES": "2,3", "CUDA_VISIBLE_DEVICES": "1"}, {"13"}),
        ({"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": ""}, set()),
        ({"CUDA_VISIBLE_DEVICES": "0,GPU-3"}, {"10", "13"}),
        ({"GPU_ID": "0,1,"}, {"10", "11"}),
        ({"NVIDIA_VISIBLE_DEVICES": "7"}, set()),
    ],
)
def test_visible_devices_are_mapped_to_minor_numbers(env: dict[str, str], minors: set[str]) -> None:
    assert visible_minors(env, _gpus(mig=("MIG-x",))) == frozenset(minors)


def test_no_visible_devices_variable_means_no_declaration() -> None:
    assert visible_minors({"PATH": "/bin"}, _gpus()) is None


def test_device_cgroup_allow_list_wins_over_environment() -> None:
    devices = b"c 195:255 rwm\nc 195:11 rw\nc 1:3 rwm\n"
    assert allowed_minors(devices) == frozenset({"11"})
    assert allowed_minors(b"a *:* rwm\n") is None
    assert allowed_minors(b"c 195:* rwm\n") is None
    state = _gpus()
    assert unit_gpus(devices, {"NVIDIA_VISIBLE_DEVICES": "all"}, [], state) == {"11"}
    assert unit_gpus(b"a *:* rwm\n", {"NVIDIA_VISIBLE_DEVICES": "all"}, [], state) == {"10", "11", "12", "13"}


def test_gpus_held_by_the_jobs_processes_are_added_and_lost_gpus_dropped() -> None:
    state = GpuState(
        devices=(
            GpuDevice(0, "0", "GPU-0", 1.0, 1.0, 1, 2),
            GpuDevice(1, "1", "GPU-1", None, None, None, None, lost=True),
        ),
        processes=(),
    )
    held = [GpuProcess(7, "0", 1)]
    assert unit_gpus(None, {"NVIDIA_VISIBLE_DEVICES": "void"}, held, state) == {"0"}
    assert unit_gpus(None, {"NVIDIA_VISIBLE_DEVICES": "all"}, [], state) == {"0"}
