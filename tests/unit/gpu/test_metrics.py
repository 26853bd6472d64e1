"""Turning a worker snapshot into metric families: original names and labels, base units, absent when unknown."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from pai_monitoring.gpu.collector import gpu_state
from pai_monitoring.gpu.metrics import BuildInput, build_families, status_families, throttle_label
from pai_monitoring.gpu.model import DeviceReading, MigReading, ProcessReading, Snapshot, XidCount

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(families: Iterable[Metric]) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def names(found: Samples) -> set[str]:
    return {name for name, _ in found}


GIB = 1 << 30
HEALTHY = DeviceReading(
    index=0,
    minor_number=2,
    uuid="GPU-aaaa",
    pci_bus_id="00000000:07:00.0",
    name="NVIDIA A100-SXM4-80GB",
    utilization_gpu_percent=87,
    memory_total_bytes=80 * GIB,
    memory_used_bytes=20 * GIB,
    temperature_celsius=61,
    power_milliwatts=250_500,
    power_limit_milliwatts=400_000,
    energy_millijoules=5_000_000,
    sm_clock_mhz=1410,
    memory_clock_mhz=1593,
    fan_percent=45,
    pcie_replay_count=3,
    ecc_corrected_volatile=5,
    ecc_uncorrected_volatile=1,
    retired_pages_single_bit=2,
    retired_pages_double_bit=0,
    retired_pages_pending=True,
    remapped_rows_correctable=1,
    remapped_rows_uncorrectable=0,
    remapped_rows_pending=False,
    remapped_rows_failure=False,
    clock_event_reasons=0x1 | 0x40,
    performance_state=2,
    mig_mode=False,
    processes=(ProcessReading(pid=4242, used_memory_bytes=20 * GIB),),
)
EXTRA = BuildInput(
    node_name="node-a", memory_leak_threshold_bytes=20 << 20, configured_gpu_count=None, xids=(), worker_restarts=0
)


def build(*devices: DeviceReading, extra: BuildInput = EXTRA) -> Samples:
    snapshot = Snapshot(status="ok", driver_version="550.54.15", cuda_version="12.4", devices=devices)
    return samples(build_families(snapshot, extra))


def test_original_families_keep_their_names_labels_and_percent_scale() -> None:
    found = build(HEALTHY)
    assert value(found, "nvidiasmi_utilization_gpu", minor_number="2") == 87
    assert value(found, "nvidiasmi_utilization_memory", minor_number="2") == 25.0
    assert value(found, "gpu_utilization", minor_number="2", vender="nvidia") == 87
    assert value(found, "gpu_mem_utilization", minor_number="2", vender="nvidia") == 25.0
    assert value(found, "nvidiasmi_temperature", minor_number="2") == 61
    assert value(found, "nvidiasmi_ecc_error_count", node_name="node-a", minor_number="2", type="single") == 5
    assert value(found, "nvidiasmi_ecc_error_count", node_name="node-a", minor_number="2", type="double") == 1
    reasons = "clocks_throttle_reason_gpu_idle,clocks_throttle_reason_hw_thermal_slowdown"
    assert (
        value(
            found,
            "nvidiasmi_performance_state",
            node_name="node-a",
            minor_number="2",
            clocks_throttle_reasons=reasons,
        )
        == 2
    )
    assert value(found, "nvidiasmi_attached_gpus") == 1


def test_new_families_use_base_units() -> None:
    found = build(HEALTHY)
    assert value(found, "pai_gpu_power_watts", minor_number="2") == 250.5
    assert value(found, "pai_gpu_power_limit_watts", minor_number="2") == 400.0
    assert value(found, "pai_gpu_energy_joules_total", minor_number="2") == 5000.0
    assert value(found, "pai_gpu_sm_clock_hertz", minor_number="2") == 1.41e9
    assert value(found, "pai_gpu_fan_speed_ratio", minor_number="2") == 0.45
    assert value(found, "pai_gpu_process_memory_bytes", minor_number="2", pid="4242") == 20 * GIB
    assert value(found, "pai_gpu_clock_event_active", minor_number="2", reason="hw_thermal_slowdown") == 1
    assert value(found, "pai_gpu_clock_event_active", minor_number="2", reason="sw_power_cap") == 0
    assert value(found, "pai_gpu_retired_pages_pending", minor_number="2") == 1
    info = {
        "minor_number": "2",
        "index": "0",
        "uuid": "GPU-aaaa",
        "pci_bus_id": "00000000:07:00.0",
        "model": "NVIDIA A100-SXM4-80GB",
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
    }
    assert value(found, "pai_gpu_info", **info) == 1


def test_memory_leak_needs_memory_in_use_and_no_process() -> None:
    idle_but_full = DeviceReading(index=1, minor_number=1, memory_total_bytes=GIB, memory_used_bytes=512 << 20)
    idle_and_empty = DeviceReading(index=2, minor_number=3, memory_total_bytes=GIB, memory_used_bytes=1 << 20)
    found = build(HEALTHY, idle_but_full, idle_and_empty)
    assert value(found, "nvidiasmi_memory_leak_count", minor_number="2") == 0
    assert value(found, "nvidiasmi_memory_leak_count", minor_number="1") == 1
    assert value(found, "nvidiasmi_memory_leak_count", minor_number="3") == 0


def test_values_a_card_does_not_report_are_absent_not_zero() -> None:
    old_card = DeviceReading(index=0, minor_number=0, utilization_gpu_percent=10, temperature_celsius=50)
    found = build(old_card)
    assert value(found, "nvidiasmi_temperature", minor_number="0") == 50
    assert not {"pai_gpu_power_watts", "pai_gpu_ecc_errors_total", "nvidiasmi_ecc_error_count"} & names(found)


def test_a_lost_gpu_is_reported_lost_and_the_healthy_one_still_reported() -> None:
    lost = DeviceReading(index=1, lost=True, minor_number=5)
    found = build(HEALTHY, lost)
    assert value(found, "pai_gpu_lost", index="1", minor_number="5") == 1
    assert value(found, "pai_gpu_lost", index="0", minor_number="2") == 0
    assert value(found, "nvidiasmi_attached_gpus") == 2
    assert value(found, "nvidiasmi_temperature", minor_number="2") == 61
    assert value(found, "nvidiasmi_temperature", minor_number="5") is None


def test_mig_instances_are_listed() -> None:
    mig_gpu = DeviceReading(
        index=0,
        minor_number=0,
        mig_mode=True,
        mig_devices=(MigReading("MIG-1", 1, 0, "3g.40gb", 1024, 40 * GIB),),
    )
    found = build(mig_gpu)
    assert value(found, "pai_gpu_mig_mode", minor_number="0") == 1
    labels = {"minor_number": "0", "mig_uuid": "MIG-1", "gpu_instance_id": "1", "compute_instance_id": "0"}
    assert value(found, "pai_gpu_mig_instance_info", profile="3g.40gb", **labels) == 1
    assert value(found, "pai_gpu_mig_instance_memory_used_bytes", minor_number="0", mig_uuid="MIG-1") == 1024


def test_xid_counters_and_configured_count() -> None:
    extra = BuildInput(
        node_name="n",
        memory_leak_threshold_bytes=0,
        configured_gpu_count=8,
        xids=(XidCount("2", 79, 3, 1700000000.0),),
        worker_restarts=2,
    )
    found = build(HEALTHY, extra=extra)
    assert value(found, "pai_gpu_xid_errors_total", minor_number="2", xid="79") == 3
    assert value(found, "pai_gpu_xid_last_seen_timestamp_seconds", minor_number="2", xid="79") == 1700000000.0
    assert value(found, "configured_gpu_count") == 8
    assert value(found, "pai_gpu_worker_restarts_total") == 2


def test_a_missing_library_is_one_status_series_set() -> None:
    found = samples(status_families("library_not_found", None))
    assert value(found, "pai_gpu_nvml_status", status="library_not_found") == 1
    assert value(found, "pai_gpu_nvml_status", status="ok") == 0
    assert "configured_gpu_count" not in names(found)


def test_throttle_label_uses_the_original_tag_names_in_nvidia_smi_order() -> None:
    assert throttle_label(0) == ""
    assert throttle_label(0x4 | 0x10 | 0x40) == (
        "clocks_throttle_reason_sw_power_cap,clocks_throttle_reason_hw_thermal_slowdown,"
        "clocks_throttle_reason_sync_boost"
    )


def test_shared_state_finds_gpus_by_index_uuid_and_mig_uuid() -> None:
    mig_gpu = DeviceReading(
        index=1, minor_number=7, uuid="GPU-bbbb", mig_devices=(MigReading("MIG-9", 1, 0, "", 0, 0),)
    )
    state = gpu_state(Snapshot(status="ok", devices=(HEALTHY, mig_gpu)))
    assert state.device_by_id("GPU-aaaa") is not None
    assert state.device_by_id("GPU-aaaa").minor_number == "2"  # type: ignore[union-attr]
    assert state.device_by_id("MIG-9").minor_number == "7"  # type: ignore[union-attr]
    assert state.device_by_id("1").uuid == "GPU-bbbb"  # type: ignore[union-attr]
    assert [(p.pid, p.minor_number, p.used_memory_bytes) for p in state.processes] == [(4242, "2", 20 * GIB)]
