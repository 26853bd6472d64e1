"""A GPU whose device node appears while the job exporter runs is read without a redeploy (issue 17).

The job exporter's unit allows the NVIDIA device classes (``DevicePolicy=closed``, ``DeviceAllow=char-nvidia-frontend``
...), not the nodes found at deploy time. systemd resolves a class from /proc/devices when the unit starts, and the
role's udev rule restarts the exporter when the driver registers; a node created later in an allowed class is
allowed without either. This module shows it on the second GPU guest with two stand-ins:

- the driver's registration: ``195 nvidia-frontend`` added to a copy of /proc/devices bind-mounted over it (no
  driver is loaded; systemd reads only the name and major number), followed by the one restart the udev rule does;
- the GPUs: the simulated NVML library with ``device_nodes = 1`` (sim/nvml/README.md) opens ``/dev/nvidia<minor>``
  when the exporter asks for a GPU's handle, as the real library does. The nodes are real character devices in the
  guest and the device cgroup really checks them: an allowed open ends in ENXIO (no driver behind the node), which
  the library counts as allowed; a denied one in EPERM, which it answers as NVML_ERROR_NO_PERMISSION.

A control proves the guest enforces device policy: a unit that allows the nodes by path, as the role once did, is
refused the new node. Everything is undone at the end (scenario, mount, nodes, exporter restarted), but Prometheus
has seen a fifth GPU come and go, which NodeGpuCountChanged rightly reports: the module runs after every module that
wants a quiet sandbox (tests/e2e/conftest.py, LAST).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox.sandbox import GPUS_PER_NODE, NVML_SCENARIO, Guest, Sandbox

pytestmark = pytest.mark.e2e

UNIT = "pai-job-exporter.service"
METRICS_URL = "http://127.0.0.1:9102/metrics"
NVIDIA_MAJOR = 195
NEW_GPU = GPUS_PER_NODE  # the index (and minor number) of the GPU that appears
NEW_UUID = "GPU-0a0a0a0a-4444-4000-8000-00000000b0b0"
DEVICES_COPY = "/run/pai-hotplug-devices"
WAIT_S = 60.0
POLL_S = 1.0

# The driver's registration as systemd reads it: "<major> <name>" right after the header (systemd stops at the
# blank line that ends the character devices).
REGISTER_DRIVER = (
    f"sed 's/^Character devices:$/Character devices:\\n{NVIDIA_MAJOR} nvidia-frontend/' /proc/devices > {DEVICES_COPY}"
    f" && mount --bind {DEVICES_COPY} /proc/devices"
)
FETCH = (
    "import sys, urllib.request\n"
    f"sys.stdout.write(urllib.request.urlopen({METRICS_URL!r}, timeout=5).read().decode())\n"
)
# Opens a node read-write and prints the errno's name (OK when it opens).
OPEN_PROBE = (
    "import errno, os, sys\n"
    "try:\n"
    "    os.close(os.open(sys.argv[1], os.O_RDWR))\n"
    "    print('OK')\n"
    "except OSError as exc:\n"
    "    print(errno.errorcode[exc.errno])\n"
)


@dataclass
class Gpus:
    """What the exporter's own /metrics says about the node's GPUs."""

    read: dict[str, str]
    """Index to UUID of every GPU the exporter read (pai_gpu_info)."""
    attached: float
    nvml_ok: float


def exporter_gpus(sandbox: Sandbox, guest: Guest) -> Gpus | None:
    done = sandbox.exec(guest, ["python3", "-c", FETCH], check=False)
    if done.returncode != 0:
        return None  # not listening yet
    read: dict[str, str] = {}
    attached = nvml_ok = -1.0
    for family in text_string_to_metric_families(done.stdout):
        for sample in family.samples:
            if sample.name == "pai_gpu_info":
                read[sample.labels["index"]] = sample.labels["uuid"]
            elif sample.name == "nvidiasmi_attached_gpus":
                attached = sample.value
            elif sample.name == "pai_gpu_nvml_status" and sample.labels["status"] == "ok":
                nvml_ok = sample.value
    return Gpus(read, attached, nvml_ok)


def wait_for_gpus(sandbox: Sandbox, guest: Guest, indexes: set[str], attached: int) -> Gpus:
    """Wait until the exporter reads exactly these GPUs of ``attached`` (a collection of the running process)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        gpus = exporter_gpus(sandbox, guest)
        if gpus is not None and set(gpus.read) == indexes and gpus.attached == attached:
            return gpus
        assert time.monotonic() < deadline, f"the exporter on {guest.name} does not read GPUs {sorted(indexes)}: {gpus}"
        time.sleep(POLL_S)


def scenario(sandbox: Sandbox, guest: Guest, *, new_gpu: bool) -> str:
    """The sandbox's scenario of the guest with device nodes on and, if asked, one more GPU."""
    text = sandbox.gpu_scenario(guest) + "device_nodes = 1\n"
    if new_gpu:
        text += f"gpu_count = {NEW_GPU + 1}\ngpu.{NEW_GPU}.uuid = {NEW_UUID}\n"
    return text


def node(minor: int) -> str:
    return f"/dev/nvidia{minor}"


def mknod(sandbox: Sandbox, guest: Guest, minor: int) -> None:
    # 0666 as the driver's own nodes: the exporter's user may open it, and only the device cgroup decides.
    sandbox.exec(guest, ["mknod", "-m", "0666", node(minor), "c", str(NVIDIA_MAJOR), str(minor)])


@pytest.fixture(scope="module")
def guest(sandbox: Sandbox) -> Iterator[Guest]:
    """The second GPU guest with the driver's registration stood in, device nodes for its GPUs, and the exporter
    restarted once (as the role's udev rule does when the driver loads); all of it undone afterwards."""
    guest = sandbox.gpu(1)
    minors = range(NEW_GPU + 1)
    present = [node(m) for m in minors if sandbox.exec(guest, ["test", "-e", node(m)], check=False).returncode == 0]
    assert not present, f"{guest.name} already has {present}: this test could not restore it"
    try:
        sandbox.exec(guest, ["sh", "-c", REGISTER_DRIVER])
        for minor in range(GPUS_PER_NODE):
            mknod(sandbox, guest, minor)
        sandbox.write_file(guest, NVML_SCENARIO, scenario(sandbox, guest, new_gpu=False))
        sandbox.exec(guest, ["systemctl", "restart", UNIT])
        yield guest
    finally:
        sandbox.write_gpu_scenario(guest)
        sandbox.exec(guest, ["rm", "-f", *(node(m) for m in minors)], check=False)
        sandbox.exec(guest, ["umount", "/proc/devices"], check=False)
        sandbox.exec(guest, ["rm", "-f", DEVICES_COPY], check=False)
        sandbox.exec(guest, ["systemctl", "restart", UNIT])
        wait_for_gpus(sandbox, guest, {str(i) for i in range(GPUS_PER_NODE)}, GPUS_PER_NODE)


def test_the_exporter_reads_its_gpus_through_their_device_nodes(sandbox: Sandbox, guest: Guest) -> None:
    gpus = wait_for_gpus(sandbox, guest, {str(i) for i in range(GPUS_PER_NODE)}, GPUS_PER_NODE)
    assert gpus.nvml_ok == 1


def test_a_gpu_whose_node_appears_later_is_read_without_a_restart(sandbox: Sandbox, guest: Guest) -> None:
    main_pid = sandbox.main_pid(guest, UNIT)
    old = {str(i) for i in range(GPUS_PER_NODE)}
    # The driver lists the new GPU before its node exists: NVML cannot open it, the exporter reads the others.
    sandbox.write_file(guest, NVML_SCENARIO, scenario(sandbox, guest, new_gpu=True))
    wait_for_gpus(sandbox, guest, old, NEW_GPU + 1)

    mknod(sandbox, guest, NEW_GPU)
    gpus = wait_for_gpus(sandbox, guest, old | {str(NEW_GPU)}, NEW_GPU + 1)
    assert gpus.read[str(NEW_GPU)] == NEW_UUID
    assert gpus.nvml_ok == 1
    assert sandbox.main_pid(guest, UNIT) == main_pid, "the exporter was restarted"


def test_control_a_unit_allowing_the_nodes_by_path_is_refused_the_new_node(sandbox: Sandbox, guest: Guest) -> None:
    """The guest enforces device policy: the per-node design (the nodes found at deploy time) is refused the node
    that appeared later, the class-based one (the role's) is let through to the absent driver."""
    if sandbox.exec(guest, ["test", "-e", node(NEW_GPU)], check=False).returncode != 0:
        mknod(sandbox, guest, NEW_GPU)  # this test run alone
    results = {}
    for allow in (f"{node(0)} rw", "char-nvidia-frontend rw"):
        argv = ["systemd-run", "--quiet", "--wait", "--pipe", "--property=DevicePolicy=closed"]
        argv += [f"--property=DeviceAllow={allow}", "python3", "-c", OPEN_PROBE, node(NEW_GPU)]
        results[allow] = sandbox.exec(guest, argv).stdout.strip()
    assert results == {f"{node(0)} rw": "EPERM", "char-nvidia-frontend rw": "ENXIO"}
