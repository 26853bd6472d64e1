"""The simulated NVML library's device nodes (``device_nodes = 1``; a stand-in for GPUs we do not have): a GPU is
read only when its ``nvidia<minor>`` node exists and may be opened, as with the real library.

The nodes are real character devices (major 195, NVIDIA's) in a directory of the test. No driver serves them on
this machine, so an allowed open ends in ENXIO, which the library counts as allowed (sim/nvml/README.md).
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.gpu.conftest import (
    NODE,
    MakeCollector,
    Scenario,
    gpu_id,
    gpus,
    samples,
    series,
    uuid_of,
    value,
)

pytestmark = pytest.mark.integration

NVIDIA_MAJOR = 195
PROBE_TIMEOUT_S = 30.0


def device_scenario(count: int, device_dir: Path) -> str:
    return gpus(count) + f"device_nodes = 1\ndevice_dir = {device_dir}\n"


def make_node(device_dir: Path, minor: int, mode: int = 0o666) -> None:
    path = device_dir / f"nvidia{minor}"
    os.mknod(path, stat.S_IFCHR | mode, os.makedev(NVIDIA_MAJOR, minor))
    path.chmod(mode)  # mknod applies the umask


def nodes_dir(tmp_path: Path, *minors: int) -> Path:
    """A directory of device nodes for these minor numbers, which the process may open."""
    device_dir = tmp_path / "dev"
    device_dir.mkdir()
    for minor in minors:
        make_node(device_dir, minor)
    return device_dir


def reported(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, str]:
    """Index to UUID of the GPUs the collector read (pai_gpu_info)."""
    return {s["index"]: s["uuid"] for s in series(found, "pai_gpu_info")}


def test_a_gpu_whose_node_appears_later_is_read_from_then_on(
    scenario: Scenario, make_collector: MakeCollector, tmp_path: Path
) -> None:
    device_dir = nodes_dir(tmp_path, 0, 1)
    scenario.write(device_scenario(3, device_dir))
    collector = make_collector()

    found = samples(collector.collect())
    assert value(found, "pai_gpu_nvml_status", status="ok", **NODE) == 1
    assert value(found, "nvidiasmi_attached_gpus", **NODE) == 3
    assert reported(found) == {"0": uuid_of(0), "1": uuid_of(1)}, "GPU 2 has no device node: NVML cannot open it"
    assert series(found, "pai_gpu_unreadable") == [
        {**NODE, "index": "2", "minor_number": "unknown", "uuid": "", "error": "no_permission"}
    ], "the GPU NVML counts but cannot open is named, with the reason"

    make_node(device_dir, 2)
    found = samples(collector.collect())
    assert reported(found) == {str(i): uuid_of(i) for i in range(3)}
    assert value(found, "pai_gpu_nvml_status", status="ok", **NODE) == 1
    assert series(found, "pai_gpu_unreadable") == []


def test_a_gpu_that_becomes_unreadable_keeps_its_identity_and_is_logged_once(
    scenario: Scenario, make_collector: MakeCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    device_dir = nodes_dir(tmp_path, 0, 1)
    scenario.write(device_scenario(2, device_dir))
    collector = make_collector()
    assert reported(samples(collector.collect())) == {"0": uuid_of(0), "1": uuid_of(1)}

    # The node goes: NVML_ERROR_NO_PERMISSION, what a device cgroup that stops allowing the node also gives (EPERM).
    (device_dir / "nvidia1").unlink()
    with caplog.at_level(logging.INFO, logger="pai_monitoring.gpu.collector"):
        for _ in range(2):
            found = samples(collector.collect())
            assert value(found, "pai_gpu_unreadable", **gpu_id(1), error="no_permission") == 1
            assert reported(found) == {"0": uuid_of(0)}
        scenario.write(scenario.text + "gpu.1.fault.nvmlDeviceGetHandleByIndex_v2 = UNKNOWN\n")
        make_node(device_dir, 1)
        found = samples(collector.collect())
        assert series(found, "pai_gpu_unreadable") == [{**gpu_id(1), "error": "unknown"}]
        scenario.write(device_scenario(2, device_dir))
        found = samples(collector.collect())
    assert series(found, "pai_gpu_unreadable") == []
    assert reported(found) == {"0": uuid_of(0), "1": uuid_of(1)}
    lines = [r.getMessage() for r in caplog.records if "GPU 1 " in r.getMessage()]
    assert len(lines) == 3, lines
    assert "Insufficient Permissions (no_permission)" in lines[0], lines[0]
    assert "DeviceAllow" in lines[0], lines[0]
    assert f"UUID {uuid_of(1)}" in lines[0], lines[0]
    assert "(unknown)" in lines[1], lines[1]
    assert "nvidia-smi -i" in lines[1], lines[1]
    assert "no longer unreadable" in lines[2], lines[2]


def test_a_node_the_process_may_not_open_is_no_permission(
    scenario: Scenario, tmp_path: Path, nvml_sim_lib: Path
) -> None:
    """Through the real ``pynvml``, in a process that the node's mode refuses (root without CAP_DAC_OVERRIDE, as
    an exporter user outside the node's group): ``nvmlDeviceGetHandleByIndex`` raises NVMLError_NoPermission."""
    device_dir = tmp_path / "dev"
    device_dir.mkdir()
    make_node(device_dir, 0, mode=0o000)
    make_node(device_dir, 1)
    scenario.write(device_scenario(2, device_dir))
    probe = (
        "import pynvml\n"
        "pynvml.nvmlInit()\n"
        "for index in (0, 1):\n"
        "    try:\n"
        "        pynvml.nvmlDeviceGetHandleByIndex(index)\n"
        "        print(index, 'ok')\n"
        "    except pynvml.NVMLError as exc:\n"
        "        print(index, type(exc).__name__, exc)\n"
    )
    argv = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c", probe]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["0 NVMLError_NoPermission Insufficient Permissions", "1 ok"]
