"""The GPU collector through the real ``pynvml`` binding on the simulated NVML library (a stand-in for hardware)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

from pai_monitoring.shared_model import GPU_STATE
from tests.integration.gpu.conftest import NODE, MakeCollector, Scenario, gpu_id, gpus, samples, series, value

GIB = 1 << 30
MIB = 1 << 20

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("count", [1, 8, 16])
def test_every_gpu_is_reported(scenario: Scenario, make_collector: MakeCollector, count: int) -> None:
    scenario.write(gpus(count))
    found = samples(make_collector().collect())
    assert value(found, "pai_gpu_nvml_status", status="ok", **NODE) == 1
    assert value(found, "nvidiasmi_attached_gpus", **NODE) == count
    assert sorted(int(s["minor_number"]) for s in series(found, "pai_gpu_info")) == list(range(count))
    for index in range(count):
        gpu = gpu_id(index)
        assert value(found, "nvidiasmi_utilization_gpu", **gpu) == 10 + index
        assert value(found, "gpu_utilization", vender="nvidia", **gpu) == 10 + index
        assert value(found, "pai_gpu_lost", **gpu) == 0
        assert value(found, "nvidiasmi_temperature", **gpu) == 40


def test_minor_number_is_the_device_minor_and_index_and_uuid_come_along(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    scenario.write("gpu_count = 2\ngpu.0.minor = 3\ngpu.0.uuid = GPU-zero\ngpu.1.minor = 1\ngpu.1.uuid = GPU-one\n")
    found = samples(make_collector().collect())
    info = {s["uuid"]: (s["index"], s["minor_number"]) for s in series(found, "pai_gpu_info")}
    assert info == {"GPU-zero": ("0", "3"), "GPU-one": ("1", "1")}
    assert value(found, "nvidiasmi_temperature", **gpu_id(0, minor=3, uuid="GPU-zero")) == 40
    assert value(found, "nvidiasmi_temperature", **gpu_id(1, minor=1, uuid="GPU-one")) == 40


def test_an_older_card_without_ecc_or_power_is_reported_without_them(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    unsupported = [
        "nvmlDeviceGetTotalEccErrors",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetRetiredPages",
        "nvmlDeviceGetRetiredPagesPendingStatus",
        "nvmlDeviceGetRemappedRows",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetPcieReplayCounter",
    ]
    faults = "".join(f"gpu.1.fault.{fn} = NOT_SUPPORTED\n" for fn in unsupported)
    scenario.write(gpus(2) + "gpu.1.name = Tesla K80\n" + faults)
    found = samples(make_collector().collect())
    for name in ("pai_gpu_power_watts", "pai_gpu_energy_joules_total", "pai_gpu_ecc_errors_total"):
        assert {s["minor_number"] for s in series(found, name)} == {"0"}, name
    assert {s["minor_number"] for s in series(found, "nvidiasmi_ecc_error_count")} == {"0"}
    assert value(found, "nvidiasmi_utilization_gpu", **gpu_id(1)) == 11
    assert value(found, "nvidiasmi_temperature", **gpu_id(1)) == 40
    assert {s["model"] for s in series(found, "pai_gpu_info")} == {"NVIDIA Simulated GPU", "Tesla K80"}


def test_a_gpu_in_mig_mode_is_reported_with_its_instances(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(
        gpus(2)
        + "gpu.1.name = NVIDIA A100-SXM4-40GB\ngpu.1.mig.mode = 1\n"
        + "gpu.1.mig.0 = MIG-aaaa 1 0 3g.20gb 1048576 21474836480\n"
        + "gpu.1.mig.2 = MIG-bbbb 2 0 3g.20gb 0 21474836480\n"
    )
    collector = make_collector()
    found = samples(collector.collect())
    assert value(found, "pai_gpu_mig_mode", **gpu_id(1)) == 1
    assert value(found, "pai_gpu_mig_mode", **gpu_id(0)) == 0
    instances = {
        (s["mig_uuid"], s["gpu_instance_id"], s["profile"]) for s in series(found, "pai_gpu_mig_instance_info")
    }
    assert instances == {("MIG-aaaa", "1", "3g.20gb"), ("MIG-bbbb", "2", "3g.20gb")}
    assert value(found, "pai_gpu_mig_instance_memory_used_bytes", mig_uuid="MIG-aaaa", **gpu_id(1)) == 1048576
    assert value(found, "nvidiasmi_temperature", **gpu_id(1)) == 40  # the GPU itself is still reported
    assert value(found, "nvidiasmi_utilization_gpu", **gpu_id(1)) is None  # NVML has no whole-GPU figure
    state = collector.context.shared.latest(GPU_STATE, max_age=60)
    assert state is not None
    device = state.device_by_id("MIG-bbbb")
    assert device is not None
    assert device.minor_number == "1"


def test_a_lost_gpu_is_reported_lost_and_the_healthy_ones_still_reported(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    scenario.write(gpus(4) + "gpu.2.minor = 7\n")
    collector = make_collector()
    collector.collect()
    scenario.append("gpu.2.lost = 1\n")
    found = samples(collector.collect())
    assert value(found, "pai_gpu_lost", **gpu_id(2, minor=7)) == 1  # minor and UUID remembered from before
    assert value(found, "nvidiasmi_attached_gpus", **NODE) == 4
    assert sorted(s["minor_number"] for s in series(found, "pai_gpu_info")) == ["0", "1", "3"]
    for index in (0, 1, 3):
        assert value(found, "pai_gpu_lost", **gpu_id(index)) == 0
        assert value(found, "nvidiasmi_temperature", **gpu_id(index)) == 40
    state = collector.context.shared.latest(GPU_STATE, max_age=60)
    assert state is not None
    assert [d.lost for d in state.devices] == [False, False, True, False]


def test_a_gpu_lost_from_the_start_has_an_unknown_minor(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(gpus(2) + "gpu.0.lost = 1\n")
    found = samples(make_collector().collect())
    assert value(found, "pai_gpu_lost", **gpu_id(0, minor="unknown", uuid="")) == 1
    assert value(found, "nvidiasmi_utilization_gpu", **gpu_id(1)) == 11


def test_injected_ecc_errors_show_in_both_families(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(gpus(2))
    collector = make_collector()
    before = samples(collector.collect())
    assert value(before, "nvidiasmi_ecc_error_count", type="double", **gpu_id(1)) == 0
    scenario.append("gpu.1.ecc.uncorrected = 2\ngpu.1.ecc.corrected = 9\ngpu.1.remapped_rows.failure = 1\n")
    after = samples(collector.collect())
    assert value(after, "nvidiasmi_ecc_error_count", type="double", **gpu_id(1)) == 2
    assert value(after, "nvidiasmi_ecc_error_count", type="single", **gpu_id(1)) == 9
    assert value(after, "pai_gpu_ecc_errors_total", type="uncorrected", **gpu_id(1)) == 2
    assert value(after, "pai_gpu_row_remap_failure", **gpu_id(1)) == 1


def test_throttle_label_is_the_same_on_drivers_without_clock_event_reasons(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    base = gpus(1, clocks_event_reasons="0x41", pstate=8)
    expected = "clocks_throttle_reason_gpu_idle,clocks_throttle_reason_hw_thermal_slowdown"
    for extra in ("", "fault.nvmlDeviceGetCurrentClocksEventReasons = FUNCTION_NOT_FOUND\n"):
        scenario.write(base + extra)
        found = samples(make_collector().collect())
        labels = series(found, "nvidiasmi_performance_state")
        assert [s["clocks_throttle_reasons"] for s in labels] == [expected]
        assert value(found, "pai_gpu_clock_event_active", reason="hw_thermal_slowdown", **gpu_id(0)) == 1


def test_processes_are_published_for_the_jobs_collector(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(
        gpus(2)
        + "gpu.0.process.0 = 4242 8589934592\n"
        + "gpu.0.process.1 = 4243 - graphics\n"
        + "gpu.1.process.0 = 777 1073741824\n"
    )
    collector = make_collector()
    found = samples(collector.collect())
    assert value(found, "pai_gpu_process_memory_bytes", pid="4242", **gpu_id(0)) == 8589934592
    assert value(found, "pai_gpu_process_memory_bytes", pid="777", **gpu_id(1)) == 1073741824
    state = collector.context.shared.latest(GPU_STATE, max_age=60)
    assert state is not None
    assert sorted((p.pid, p.minor_number, p.used_memory_bytes) for p in state.processes) == [
        (777, "1", 1073741824),
        (4242, "0", 8589934592),
        (4243, "0", None),
    ]
    device = state.device_by_id("GPU-00000001-1111-2222-3333-444444444444")
    assert device is not None
    assert device.minor_number == "1"


def test_memory_held_with_no_process_is_a_leak(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(gpus(2) + "gpu.0.memory.used = 1073741824\ngpu.1.memory.used = 1073741824\n")
    scenario.append("gpu.1.process.0 = 4242 1073741824\n")
    found = samples(make_collector(memory_leak_threshold_bytes=64 << 20).collect())
    assert value(found, "nvidiasmi_memory_leak_count", **gpu_id(0)) == 1
    assert value(found, "nvidiasmi_memory_leak_count", **gpu_id(1)) == 0


def test_memory_the_driver_reserves_is_not_memory_in_use(scenario: Scenario, make_collector: MakeCollector) -> None:
    """NVML v1 counts the driver's reserved memory as used; an idle data-centre GPU would look like a leak."""
    scenario.write(gpus(2, memory__total=80 * GIB, memory__reserved=569 * MIB) + "gpu.1.memory.used = 2147483648\n")
    scenario.append("gpu.1.process.0 = 4242 2147483648\n")
    found = samples(make_collector().collect())
    assert value(found, "pai_gpu_memory_used_bytes", **gpu_id(0)) == 0
    assert value(found, "pai_gpu_memory_reserved_bytes", **gpu_id(0)) == 569 * MIB
    assert value(found, "pai_gpu_memory_total_bytes", **gpu_id(0)) == 80 * GIB
    assert value(found, "nvidiasmi_memory_leak_count", **gpu_id(0)) == 0
    assert value(found, "nvidiasmi_utilization_memory", **gpu_id(0)) == 0
    assert value(found, "pai_gpu_memory_used_bytes", **gpu_id(1)) == 2 * GIB
    assert value(found, "nvidiasmi_utilization_memory", **gpu_id(1)) == 2.5


def test_a_driver_without_memory_info_v2_falls_back_to_v1(scenario: Scenario, make_collector: MakeCollector) -> None:
    """Drivers before R510 have no v2 call; their v1 keeps the reserved memory out of the total already."""
    old_driver = "fault.nvmlDeviceGetMemoryInfo_v2 = FUNCTION_NOT_FOUND\ngpu.0.memory.used = 1073741824\n"
    scenario.write(gpus(2, memory__total=12 * GIB) + old_driver)
    collector = make_collector()
    for _ in range(2):  # the second collection goes straight to v1
        found = samples(collector.collect())
        assert value(found, "pai_gpu_memory_used_bytes", **gpu_id(0)) == GIB
        assert value(found, "pai_gpu_memory_used_bytes", **gpu_id(1)) == MIB
        assert value(found, "nvidiasmi_memory_leak_count", **gpu_id(0)) == 1
        assert "pai_gpu_memory_reserved_bytes" not in {name for name, _ in found}


def test_xid_events_are_counted_once_each_even_across_a_worker_restart(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    scenario.write(gpus(2) + "xid.1 = 0 13\n")  # already in the past when the worker starts: never delivered
    collector = make_collector(timeout=3.0)
    collector.collect()
    scenario.append("xid.2 = 1 79\nxid.3 = 1 79\nxid.4 = 0 48\n")

    def xids() -> dict[tuple[str, str], float]:
        found = samples(collector.collect())
        return {
            (s["minor_number"], s["xid"]): value(found, "pai_gpu_xid_errors_total", **s) or 0.0
            for s in series(found, "pai_gpu_xid_errors_total")
        }

    expected = {("1", "79"): 2.0, ("0", "48"): 1.0}
    deadline = time.monotonic() + 30  # a liveness bound
    while xids() != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert xids() == expected
    assert xids() == expected  # asking again does not add

    # Hang the worker so it is killed, then let a fresh one start: the counts neither reset nor double.
    scenario.append("block.nvmlDeviceGetCount_v2 = 30\n")
    assert value(samples(collector.collect()), "pai_gpu_nvml_status", status="timeout", **NODE) == 1
    scenario.write(scenario.text.replace("block.nvmlDeviceGetCount_v2 = 30\n", ""))
    assert xids() == expected
    assert collector.supervisor.generation == 2
    scenario.append("xid.5 = 0 48\n")
    expected = {("1", "79"): 2.0, ("0", "48"): 2.0}
    deadline = time.monotonic() + 30  # a liveness bound
    while xids() != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert xids() == expected


def test_xid_events_of_a_gpu_that_appears_later_are_counted_under_its_minor_number(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    """The worker started with two GPUs; a third that appears afterwards (hotplug, or a handle that failed at first)
    is registered for Xid events when a collection first reads it."""
    scenario.write(gpus(2))
    collector = make_collector()
    collector.collect()
    scenario.write(gpus(3) + "gpu.2.minor = 7\n")
    found = samples(collector.collect())
    assert value(found, "pai_gpu_lost", **gpu_id(2, minor=7)) == 0, "the new GPU is read"
    scenario.append("xid.1 = 2 48\nxid.2 = 0 13\n")

    def xids() -> dict[tuple[str, str, str], float]:
        found = samples(collector.collect())
        return {
            (s["index"], s["minor_number"], s["xid"]): value(found, "pai_gpu_xid_errors_total", **s) or 0.0
            for s in series(found, "pai_gpu_xid_errors_total")
        }

    expected = {("2", "7", "48"): 1.0, ("0", "0", "13"): 1.0}
    deadline = time.monotonic() + 30  # a liveness bound
    while xids() != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert xids() == expected


def test_a_blocking_call_is_abandoned_at_the_deadline_and_collection_recovers(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    scenario.write(gpus(2))
    collector = make_collector(timeout=5.0)  # room for a worker to start on a busy machine
    collector.collect()
    first_worker = collector.supervisor.pid
    assert first_worker is not None
    scenario.append("gpu.1.block.nvmlDeviceGetTemperature = 60\n")
    started = time.monotonic()
    hung = samples(collector.collect())
    assert time.monotonic() - started < 60  # did not wait for the driver
    assert not psutil.pid_exists(first_worker) or psutil.Process(first_worker).status() == psutil.STATUS_ZOMBIE
    assert psutil.Process().children() == []  # killed and reaped
    # The collection reports the hang with the collector's health; no GPU series is served from a hung driver.
    assert value(hung, "pai_gpu_nvml_status", status="timeout", **NODE) == 1
    assert value(hung, "pai_gpu_nvml_status", status="ok", **NODE) == 0
    assert value(hung, "pai_gpu_nvml_timeouts_total", **NODE) == 1
    assert value(hung, "pai_gpu_worker_restarts_total", **NODE) == 1
    assert value(hung, "pai_gpu_nvml_last_success_timestamp_seconds", **NODE) is not None
    assert "nvidiasmi_temperature" not in {name for name, _ in hung}
    scenario.write(gpus(2))
    found = samples(collector.collect())
    assert value(found, "nvidiasmi_temperature", **gpu_id(1)) == 40
    assert value(found, "pai_gpu_worker_restarts_total", **NODE) == 1
    assert value(found, "pai_gpu_nvml_timeouts_total", **NODE) == 1
    assert value(found, "pai_gpu_nvml_status", status="ok", **NODE) == 1


def test_a_crashing_library_is_an_nvml_error_and_the_worker_is_replaced(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    scenario.write(gpus(2) + "fault.nvmlDeviceGetCount_v2 = CRASH\n")
    collector = make_collector()
    for restarts in (1, 2):
        found = samples(collector.collect())
        assert value(found, "pai_gpu_nvml_status", status="error", **NODE) == 1
        assert value(found, "pai_gpu_worker_restarts_total", **NODE) == restarts
        assert value(found, "pai_gpu_nvml_timeouts_total", **NODE) == 0
    scenario.write(gpus(2))
    found = samples(collector.collect())
    assert value(found, "nvidiasmi_attached_gpus", **NODE) == 2


def test_twenty_consecutive_hangs_leave_no_pile_of_processes_or_threads(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    scenario.write(gpus(1) + "block.nvmlInitWithFlags = 60\n")
    collector = make_collector(timeout=2.0)
    me = psutil.Process()
    threads_before, fds_before = threading.active_count(), me.num_fds()
    for _ in range(20):
        assert value(samples(collector.collect()), "pai_gpu_nvml_status", status="timeout", **NODE) == 1
        assert len(me.children(recursive=True)) == 0
    assert threading.active_count() == threads_before
    assert me.num_fds() == fds_before
    assert collector.supervisor.restarts == 20
    assert collector.supervisor.timeouts == 20
    scenario.write(gpus(1))
    found = samples(collector.collect())
    assert value(found, "pai_gpu_nvml_status", status="ok", **NODE) == 1


def test_steady_state_spawns_no_process(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(gpus(8))
    collector = make_collector()
    collector.collect()
    worker = collector.supervisor.pid
    for _ in range(10):
        collector.collect()
    assert collector.supervisor.spawned == 1
    assert collector.supervisor.pid == worker
    assert [p.pid for p in psutil.Process().children(recursive=True)] == [worker]


def test_a_missing_library_is_a_state_not_an_error(
    tmp_path: Path, make_collector: MakeCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-driver-here"
    empty.mkdir()
    monkeypatch.setenv("LD_LIBRARY_PATH", str(empty))
    collector = make_collector(library_retry_iterations=3, configured_count=8, required=True)
    for _ in range(7):
        found = samples(collector.collect())
        assert value(found, "pai_gpu_nvml_status", status="library_not_found", **NODE) == 1
        assert value(found, "pai_gpu_nvml_status", status="ok", **NODE) == 0
        assert value(found, "configured_gpu_count", **NODE) == 8
        assert value(found, "pai_gpu_required", **NODE) == 1
        assert "nvidiasmi_attached_gpus" not in {name for name, _ in found}
    assert collector.supervisor.requests == 3  # iterations 1, 4 and 7 asked NVML again


def test_a_driver_that_comes_back_is_picked_up(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(gpus(2) + "fault.nvmlInitWithFlags = DRIVER_NOT_LOADED\n")
    collector = make_collector(library_retry_iterations=2)
    found = samples(collector.collect())
    assert value(found, "pai_gpu_nvml_status", status="driver_not_loaded", **NODE) == 1
    scenario.write(gpus(2))
    collector.collect()  # not retried yet
    found = samples(collector.collect())
    assert value(found, "pai_gpu_nvml_status", status="ok", **NODE) == 1
    assert value(found, "nvidiasmi_attached_gpus", **NODE) == 2
